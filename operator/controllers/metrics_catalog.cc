#include "operator/controllers/metrics_catalog.h"

namespace buildcache::controllers {

OperatorMetrics::OperatorMetrics(metrics::Registry& registry)
    : reconciles(registry.AddCounter("buildcache_operator_reconciles_total",
                                     "BuildCache reconciles by result.", {"result"})),
      reconcile_duration(registry.AddHistogram("buildcache_operator_reconcile_duration_seconds",
                                               "Time one BuildCache reconcile took.", {},
                                               metrics::DefaultLatencyBuckets())),
      queue_depth(registry.AddGauge("buildcache_operator_workqueue_depth",
                                    "BuildCache keys waiting to be reconciled.")),
      leader(registry.AddGauge("buildcache_operator_leader",
                               "1 while this replica is the elected leader, else 0.")),
      wheel_build_reconciles(registry.AddCounter("buildcache_operator_wheelbuild_reconciles_total",
                                                 "WheelBuild reconciles by result.", {"result"})),
      wheel_build_queue_depth(registry.AddGauge("buildcache_operator_wheelbuild_workqueue_depth",
                                                "WheelBuild keys waiting to be reconciled.")) {}

}  // namespace buildcache::controllers
