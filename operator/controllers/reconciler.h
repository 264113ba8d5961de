#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/kube/event_recorder.h"
#include "common/kube/kube_client.h"
#include "common/status/status.h"
#include "operator/api/buildcache.h"
#include "operator/controllers/hit_ratio.h"
#include "operator/controllers/owned_objects.h"
#include "operator/controllers/peer_tls.h"
#include "operator/controllers/policy.h"

namespace buildcache::controllers {

// buildcaches.buildcache.io/v1alpha1.
extern const kube::Resource kBuildCaches;

struct ReconcilerOptions {
  BuildOptions build{};
  // What BuildCache specs may ask for (images, hostPaths, the default sumdb name).
  SpecPolicy policy{};
  // The namespaces where the operator may run BuildCaches (its RBAC covers their DaemonSets,
  // Services and ConfigMaps); a BuildCache elsewhere is refused with NamespaceNotManaged.
  // Empty: every namespace.
  std::vector<std::string> namespaces{};
  // Server-side apply field manager; applies are forced, so manual edits of fields the operator
  // sets are undone on the next reconcile.
  std::string field_manager = kManagedBy;
  // Time source for condition lastTransitionTime (injectable for tests).
  std::function<std::chrono::system_clock::time_point()> now = std::chrono::system_clock::now;
  // The latest hit ratio of a BuildCache by key (HitRatioScraper::Get); nullopt or unset keeps
  // the stored status.hitRatio and status.ecosystems.
  std::function<std::optional<HitStats>(const std::string& key)> hit_stats{};
  // Validity and renewal of the per-BuildCache peer CA and agent certificates (peer_tls.h); the
  // clock is `now`.
  PeerTlsOptions peer_tls{};
};

// What one reconcile did, for the work queue and metrics.
enum class ReconcileResult {
  kSuccess,  // the cluster matches the spec (as far as it can); status written
  kError,    // a transient failure: retry with backoff
  kInvalid,  // the spec (or an object built from it) was refused: reported in status, not retried
  kGone,     // the BuildCache no longer exists (or was just finalized)
};
std::string_view ReconcileResultName(ReconcileResult result);

struct ReconcileOutcome {
  ReconcileResult result = ReconcileResult::kSuccess;
  Status status{};  // the error, for kError and kInvalid
  // kSuccess: reconcile again after this long instead of the controller's resync period (0 =
  // the resync period). Set while something the spec names is missing (an upstreamSecretRef's
  // Secret), so status follows soon after it appears.
  std::chrono::seconds requeue_after{0};
};

// The status a BuildCache should have, given its spec and its DaemonSet as the API server returned
// it (spec, metadata.generation and status). `previous` keeps lastTransitionTime of conditions
// whose status did not change. Conditions:
//   Ready        True AllAgentsReady | False NoNodes, AgentsNotReady
//   Progressing  True RollingOut (agents run an older template or the DaemonSet controller has
//                not seen the latest one) | False RolloutComplete
//   UpstreamCredentials (only with an upstreamSecretRef; written by the reconciler)
//                True SecretsFound | False SecretNotFound (a Secret or one of its keys is
//                missing; the agents run, and fetches from that upstream fail until it appears)
//   Degraded     False AsExpected (the reconciler writes True with ApplyFailed, InvalidSpec,
//                ObjectRejected, NotAllowed, SumdbNotNamed, HostPathConflict or
//                NamespaceNotManaged when it fails; NotAllowed, SumdbNotNamed and
//                HostPathConflict also delete the agent DaemonSet, so no agent runs)
api::BuildCacheStatus ComputeStatus(int64_t generation, const Json& daemonset,
                                    const std::vector<api::Condition>& previous,
                                    const std::string& now);

// Sets (or replaces) the condition of this type, keeping lastTransitionTime when the status is
// unchanged.
void SetCondition(std::vector<api::Condition>* conditions, api::Condition condition,
                  const std::vector<api::Condition>& previous);

// Level-based reconcile of one BuildCache by "namespace/name": reads it, adds the finalizer,
// checks it against the SpecPolicy and against every other BuildCache's hostPath (the first to
// claim a node directory keeps it; a later one whose hostPath equals, contains or lies inside it
// is refused), keeps the peer certificate Secrets (with spec.replication.mutualTLS), applies the
// ConfigMap, Services, DaemonSet and (with spec.access.networkPolicy) NetworkPolicy with
// server-side apply, and writes status (observedGeneration, conditions, nodes) through the status
// subresource when it changed. On deletion the finalizer deletes the owned objects and removes
// itself.
//
// Data on the nodes (storage.hostPath) is never deleted by the operator, whatever
// storage.reclaimPolicy says: removing a hostPath on every node needs a privileged pod per node,
// which would block deletion on unreachable or drained nodes. With reclaimPolicy Delete the
// finalizer records a Warning event (DataNotReclaimed) naming the path, so an administrator (or a
// node-cleanup tool) removes it; see operator/controllers/README.md.
//
// Thread-safe as long as each key is reconciled by one thread at a time (the WorkQueue guarantees
// that).
class Reconciler {
 public:
  Reconciler(kube::KubeClient* client, kube::EventRecorder* events, ReconcilerOptions options);

  ReconcileOutcome Reconcile(const std::string& key);

  // Writes only status.hitRatio and status.ecosystems from options.hit_stats, when they differ
  // from the stored ones (what the hit-ratio thread queues: no apply of the owned objects). The
  // patch carries the resourceVersion it read, so it never overwrites a newer status (a
  // conflict is an error, retried). A BuildCache not yet reconciled is left to its reconcile.
  ReconcileOutcome UpdateHitStats(const std::string& key);

 private:
  // The BuildCache named by key ("namespace/name"), or the outcome to return: kGone when it no
  // longer exists, kError when it cannot be read.
  std::variant<Json, ReconcileOutcome> GetBuildCache(const std::string& key);
  ReconcileOutcome Finalize(const Json& object);
  // The steps of Reconcile, in order. Those returning an outcome return it only to end the
  // reconcile early (the failure is reported in status and events already).
  ReconcileOutcome RefuseNamespace(const Json& object);
  // Adds kFinalizer (object becomes the patched BuildCache).
  std::optional<ReconcileOutcome> EnsureFinalizer(Json& object);
  // ApplyPolicy (which may change cache) and the hostPath claims.
  std::optional<ReconcileOutcome> CheckAdmissible(const Json& object, api::BuildCache& cache);
  // Applies the ConfigMap, Services, DaemonSet and NetworkPolicy (or deletes the policy);
  // returns the applied DaemonSet.
  std::variant<Json, ReconcileOutcome> ApplyOwnedObjects(const Json& object,
                                                         const api::BuildCache& cache,
                                                         const std::string& peer_tls_hash);
  // Writes status from the DaemonSet (and the hit stats, and the problems CheckUpstreamSecrets
  // found) and an event when readiness or the UpstreamCredentials condition changed.
  ReconcileOutcome UpdateStatus(const std::string& key, const Json& object,
                                const api::BuildCache& cache, const Json& daemonset,
                                const std::vector<std::string>& credential_problems);
  // Looks up every upstreamSecretRef's Secret (upstream_secrets.h: which keys it has, never a
  // value) and returns one problem per Secret that is missing or lacks a key.
  std::vector<std::string> CheckUpstreamSecrets(const api::BuildCache& cache);
  // A write of an owned object (what) failed: ObjectRejected (kInvalid) when the API server
  // refused the object itself, else ApplyFailed (kError, retried).
  ReconcileOutcome WriteFailure(const Json& object, const std::string& what, const Status& s);
  // Creates or rotates the peer CA and agent certificate Secrets (peer_tls.h) and returns
  // PeerTlsHash of what the agents should mount.
  Result<std::string> SyncPeerTls(const api::BuildCache& cache);
  // Creates the agents' admin token Secret (admin_token.h) when it is missing or holds no token;
  // an existing token is never replaced.
  Status SyncAdminToken(const api::BuildCache& cache);
  // Reports a BuildCache the operator will not run (status, event) and deletes its DaemonSet.
  ReconcileOutcome Refuse(const Json& object, const api::BuildCache& cache,
                          const std::string& reason, const Status& why);
  // Fills spec.access.trustedWriters.namespaces from its namespace selector and the cluster's
  // namespaces (the agents take names; a label change shows at the next reconcile or resync).
  Status ResolveTrustedNamespaces(api::BuildCache* cache);
  // Whether BuildCaches in this namespace are run (ReconcilerOptions::namespaces).
  bool Manages(const std::string& ns) const;
  // Every BuildCache's hostPath claim, from the API server (all namespaces).
  Result<std::vector<HostPathClaim>> ListClaims();
  // Writes the status if it differs from what the object has.
  Status WriteStatus(const Json& object, const api::BuildCacheStatus& status);
  // Records a Degraded/Ready=False status with this reason, and a Warning event.
  void ReportFailure(const Json& object, const std::string& reason, const std::string& message);
  void Event(const Json& object, kube::EventType type, std::string_view reason,
             const std::string& note);

  kube::KubeClient* client_;
  kube::EventRecorder* events_;
  ReconcilerOptions options_;
};

}  // namespace buildcache::controllers
