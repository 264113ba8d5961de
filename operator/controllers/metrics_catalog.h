#pragma once

#include "common/metrics/metrics.h"

namespace buildcache::controllers {

// The operator's metrics: the buildcache-operator binary's catalog (the webhook registers its own
// families in the same registry).
struct OperatorMetrics {
  explicit OperatorMetrics(metrics::Registry& registry);

  // buildcache_operator_reconciles_total{result}: result is success, error, invalid or gone.
  metrics::Family<metrics::Counter>& reconciles;
  // buildcache_operator_reconcile_duration_seconds.
  metrics::Family<metrics::Histogram>& reconcile_duration;
  // buildcache_operator_workqueue_depth: keys waiting to be reconciled.
  metrics::Family<metrics::Gauge>& queue_depth;
  // buildcache_operator_leader: 1 while this replica holds the leader lease.
  metrics::Family<metrics::Gauge>& leader;
  // buildcache_operator_wheelbuild_reconciles_total{result}: WheelBuild reconciles (builder
  // pods), result as for BuildCaches; invalid counts WheelBuilds refused (and failed) unbuilt.
  metrics::Family<metrics::Counter>& wheel_build_reconciles;
  // buildcache_operator_wheelbuild_workqueue_depth: WheelBuild keys waiting to be reconciled.
  metrics::Family<metrics::Gauge>& wheel_build_queue_depth;
};

}  // namespace buildcache::controllers
