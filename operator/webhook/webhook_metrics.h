#pragma once

#include "common/metrics/metrics.h"

namespace buildcache::webhook {

// The admission webhook's metric families, registered in the operator's registry beside
// controllers::OperatorMetrics.
struct WebhookMetrics {
  explicit WebhookMetrics(metrics::Registry& registry);

  // buildcache_webhook_admissions_total{result}: result is an AdmissionOutcomeName
  // (not_requested, mutated, unchanged, not_allowed, failed).
  metrics::Family<metrics::Counter>& admissions;
  // buildcache_webhook_admission_duration_seconds: from request received to answer built.
  metrics::Family<metrics::Histogram>& admission_duration;
};

}  // namespace buildcache::webhook
