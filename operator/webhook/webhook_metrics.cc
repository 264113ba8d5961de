#include "operator/webhook/webhook_metrics.h"

namespace buildcache::webhook {

WebhookMetrics::WebhookMetrics(metrics::Registry& registry)
    : admissions(registry.AddCounter("buildcache_webhook_admissions_total",
                                     "Pod admission reviews answered, by result.", {"result"})),
      admission_duration(registry.AddHistogram("buildcache_webhook_admission_duration_seconds",
                                               "Time one admission review took to answer.", {},
                                               metrics::DefaultLatencyBuckets())) {}

}  // namespace buildcache::webhook
