#include "operator/controllers/owned_objects.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "agent/config/agent_config_tree.h"
#include "common/log/log.h"
#include "operator/controllers/admin_token.h"
#include "operator/controllers/agent_identity.h"
#include "operator/controllers/peer_tls.h"
#include "operator/controllers/upstream_secrets.h"
#include "operator/controllers/wheel_build_pod.h"

namespace buildcache::controllers {
namespace {

constexpr char kConfigPath[] = "/etc/buildcache/agent.yaml";
constexpr char kStoreDir[] = "/var/lib/buildcache/store";
constexpr char kDirectoriesMountPath[] = "/var/lib/buildcache/directories";

// Whether YAML would read `s` as something other than this string (a bool, null or number), so it
// must be quoted.
bool NeedsQuotes(const std::string& s) {
  if (s.empty()) return true;
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}) {
    if (lower == word) return true;
  }
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  if (end != s.c_str() && *end == '\0') return true;
  return s.front() == '0' && s.size() > 1 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) != 0;
         });
}

void Emit(YAML::Emitter& out, const Json& v) {
  switch (v.type()) {
    case Json::value_t::object:
      out << YAML::BeginMap;
      for (const auto& [key, item] : v.items()) {
        out << YAML::Key;
        if (NeedsQuotes(key)) out << YAML::DoubleQuoted;
        out << key << YAML::Value;
        Emit(out, item);
      }
      out << YAML::EndMap;
      break;
    case Json::value_t::array:
      out << YAML::BeginSeq;
      for (const Json& item : v) Emit(out, item);
      out << YAML::EndSeq;
      break;
    case Json::value_t::string: {
      const std::string& s = v.get_ref<const std::string&>();
      if (s.find('\n') != std::string::npos) {
        out << YAML::Literal << s;
      } else {
        if (NeedsQuotes(s)) out << YAML::DoubleQuoted;
        out << s;
      }
      break;
    }
    case Json::value_t::boolean:
      out << v.get<bool>();
      break;
    case Json::value_t::number_integer:
      out << v.get<int64_t>();
      break;
    case Json::value_t::number_unsigned:
      out << v.get<uint64_t>();
      break;
    case Json::value_t::number_float:
      out << v.get<double>();
      break;
    default:
      out << YAML::Null;
      break;
  }
}

// The keys every registry mirror section shares; metadataTtl only when the spec sets it.
void SetMirror(agent::PartialAgentConfig& out, agent::UpstreamMirrorConfig& section,
               const api::Mirror& mirror) {
  out.Set(section.upstream, mirror.upstream);
  if (!mirror.metadata_ttl.text.empty()) out.Set(section.metadata_ttl, mirror.metadata_ttl.value);
}

Json Quantities(const std::map<std::string, std::string>& m) {
  Json j = Json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}

}  // namespace

Json OwnedMetadata(const api::BuildCache& cache, const std::string& name) {
  return {{"name", name},
          {"namespace", cache.ns},
          {"labels", CommonLabels(cache)},
          {"ownerReferences", Json::array({OwnerReference(cache)})}};
}

std::string DaemonSetName(const api::BuildCache& cache) { return "buildcache-" + cache.name; }
std::string ConfigMapName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-config";
}
std::string ServiceName(const api::BuildCache& cache) { return "buildcache-" + cache.name; }
std::string PeerServiceName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-peers";
}

std::string DirectoryMountPath(const std::string& name) {
  return std::string(kDirectoriesMountPath) + "/" + name;
}

std::string PeerServiceHost(const api::BuildCache& cache) {
  return PeerServiceName(cache) + "." + cache.ns + ".svc";
}

std::string DirectoryHostPath(const api::BuildCache& cache, const std::string& name) {
  return cache.HostPath() + "/directories/" + name;
}

Json SelectorLabels(const api::BuildCache& cache) {
  return {{"app.kubernetes.io/name", "buildcache-agent"},
          {"app.kubernetes.io/instance", cache.name}};
}

Json CommonLabels(const api::BuildCache& cache) {
  Json labels = SelectorLabels(cache);
  labels["app.kubernetes.io/component"] = "agent";
  labels["app.kubernetes.io/part-of"] = "buildcache";
  labels["app.kubernetes.io/managed-by"] = kManagedBy;
  return labels;
}

Json OwnerReference(const api::BuildCache& cache) {
  return {{"apiVersion", api::kApiVersion},
          {"kind", api::kKind},
          {"name", cache.name},
          {"uid", cache.uid},
          {"controller", true},
          {"blockOwnerDeletion", true}};
}

std::string RenderAgentConfig(const api::BuildCache& cache) {
  const api::BuildCacheSpec& spec = cache.spec;
  const api::Ecosystems& eco = spec.ecosystems;
  agent::PartialAgentConfig out;
  agent::AgentConfig& c = out.config();
  out.Set(c.listen, "0.0.0.0:" + std::to_string(kAgentPort));
  log::Level level = log::Level::kInfo;
  if (!spec.agent.log_level.empty()) log::ParseLevel(spec.agent.log_level, &level);
  out.Set(c.log_level, level);
  out.Set(c.store.data_dir, kStoreDir);
  out.Set(c.store.max_size, spec.storage.max_size.bytes);
  out.Set(c.server.probe_listen, "0.0.0.0:" + std::to_string(kProbePort));
  if (eco.httpcache) {
    // The agent refuses objects larger than its store; a cache smaller than the default object
    // limit gets the store size as its limit.
    out.Set(c.httpcache.enabled, true);
    out.Set(c.httpcache.max_object_size,
            std::min(eco.httpcache->max_object_size.bytes, spec.storage.max_size.bytes));
  } else {
    out.Set(c.httpcache.enabled, false);
  }
  if (eco.pypi) {
    SetMirror(out, c.pypi, *eco.pypi);
    // Always written: the agent's own default (on, for a laptop) is not the cluster's.
    out.Set(c.pypi.wheel_house, eco.pypi->wheel_house);
    RenderPodBuilders(cache, &out);
  }
  if (eco.goproxy) {
    SetMirror(out, c.goproxy, eco.goproxy->mirror);
    // The agent proxies the database from <upstream>/sumdb/<name>, the path every Go module
    // proxy that proxies a checksum database uses.
    // An empty name reaches here only from a builder called without ApplyPolicy (which fills the
    // operator's default or refuses the BuildCache).
    if (eco.goproxy->sumdb && !eco.goproxy->sumdb_name.empty()) {
      out.Set(c.goproxy.sumdb.name, eco.goproxy->sumdb_name);
    }
  }
  if (eco.npm) SetMirror(out, c.npm, *eco.npm);
  if (eco.cargo) SetMirror(out, c.cargo, *eco.cargo);
  if (eco.maven) SetMirror(out, c.maven, *eco.maven);
  // Peers find each other through the headless Service (it lists agents before they are ready,
  // so hydrating agents are found too); each advertises its pod IP (--advertise in the args).
  agent::ReplicationConfig& r = c.replication;
  out.Set(r.listen, "0.0.0.0:" + std::to_string(kPeerPort));
  out.Set(r.copies, int64_t{spec.replication.copies});
  out.Set(r.dns.name, PeerServiceHost(cache));
  out.Set(r.dns.port, int64_t{kPeerPort});
  out.Set(r.hydrate.enabled, spec.replication.hydrate);
  if (spec.replication.scope_miss_ttl) {
    out.Set(r.scope_miss_ttl, spec.replication.scope_miss_ttl->value);
  }
  if (spec.replication.mutual_tls) {
    const std::string dir = kPeerTlsDir;
    out.Set(r.tls.cert_file, dir + "/tls.crt");
    out.Set(r.tls.key_file, dir + "/tls.key");
    out.Set(r.tls.ca_file, dir + "/ca.crt");
    out.Set(r.tls.server_name, PeerServerName(cache));
  }
  out.Set(c.admin.token_file, std::string(kAdminTokenDir) + "/" + kAdminTokenKey);
  for (const api::Directory& dir : spec.directories) {
    c.directories.push_back(
        {.name = dir.name, .path = DirectoryMountPath(dir.name), .max_size = dir.max_size.bytes});
  }
  for (const agent::DirectoryConfig& dir : c.directories) {
    out.Mark(dir.name);
    out.Mark(dir.path);
    out.Mark(dir.max_size);
  }
  RenderIdentityConfig(cache, &out);
  RenderUpstreamAuth(cache, &out);
  return "# Rendered by buildcache-operator from BuildCache " + cache.ns + "/" + cache.name +
         "; edits are overwritten.\n" + ToYaml(out.ToJson());
}

std::string ConfigHash(const std::string& rendered_config) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(rendered_config.data(), rendered_config.size(), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < 8 && i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

Json BuildConfigMap(const api::BuildCache& cache) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", OwnedMetadata(cache, ConfigMapName(cache))},
          {"data", {{kConfigKey, RenderAgentConfig(cache)}}}};
}

Json BuildDaemonSet(const api::BuildCache& cache, const BuildOptions& options,
                    const std::string& peer_tls_hash) {
  const api::BuildCacheSpec& spec = cache.spec;
  Json volumes = Json::array({
      {{"name", "config"}, {"configMap", {{"name", ConfigMapName(cache)}, {"defaultMode", 0444}}}},
      {{"name", "data"}, {"hostPath", {{"path", cache.HostPath()}, {"type", "DirectoryOrCreate"}}}},
  });
  Json mounts = Json::array({
      {{"name", "config"}, {"mountPath", kConfigDir}, {"readOnly", true}},
      {{"name", "data"}, {"mountPath", kDataMountPath}},
  });
  // Each directory is its own hostPath volume, so the kubelet creates it on every node before
  // any CI pod mounts the same path.
  for (const api::Directory& dir : spec.directories) {
    volumes.push_back(
        {{"name", "dir-" + dir.name},
         {"hostPath",
          {{"path", DirectoryHostPath(cache, dir.name)}, {"type", "DirectoryOrCreate"}}}});
    mounts.push_back({{"name", "dir-" + dir.name}, {"mountPath", DirectoryMountPath(dir.name)}});
  }
  // The Secrets' names are not in the configuration (only where they are mounted): a new
  // reference changes the hash too.
  Json annotations = {{kConfigHashAnnotation,
                       ConfigHash(RenderAgentConfig(cache) + UpstreamSecretRefsText(cache))}};
  if (spec.replication.mutual_tls) {
    // Readable by the agent (root) only; ca.key is in another Secret that no pod mounts.
    volumes.push_back(
        {{"name", "peer-tls"},
         {"secret", {{"secretName", PeerTlsSecretName(cache)}, {"defaultMode", 0400}}}});
    mounts.push_back({{"name", "peer-tls"}, {"mountPath", kPeerTlsDir}, {"readOnly", true}});
    if (!peer_tls_hash.empty()) annotations[kPeerTlsHashAnnotation] = peer_tls_hash;
  }

  // The admin token (POST /admin/purge), readable by the agent (root) only.
  volumes.push_back({{"name", "admin"},
                     {"secret", {{"secretName", AdminSecretName(cache)}, {"defaultMode", 0400}}}});
  mounts.push_back({{"name", "admin"}, {"mountPath", kAdminTokenDir}, {"readOnly", true}});
  // Private upstreams' credentials (upstream_secrets.h), readable by the agent (root) only.
  AddUpstreamSecretVolumes(cache, &volumes, &mounts);

  auto probe = [](const char* path, int period, int failures) {
    return Json{{"httpGet", {{"path", path}, {"port", "probe"}}},
                {"periodSeconds", period},
                {"timeoutSeconds", 2},
                {"failureThreshold", failures}};
  };
  Json container = {
      {"name", "agent"},
      {"image", spec.agent.image.empty() ? options.agent_image : spec.agent.image},
      // $(POD_IP) is expanded by the kubelet from the env below; the config file cannot say it.
      {"args", Json::array({"--config", kConfigPath, "--advertise",
                            "$(POD_IP):" + std::to_string(kPeerPort)})},
      {"ports", Json::array({
                    {{"name", "http"}, {"containerPort", kAgentPort}, {"protocol", "TCP"}},
                    {{"name", "peer"}, {"containerPort", kPeerPort}, {"protocol", "TCP"}},
                    {{"name", "probe"}, {"containerPort", kProbePort}, {"protocol", "TCP"}},
                })},
      {"env",
       Json::array({
           {{"name", "NODE_NAME"}, {"valueFrom", {{"fieldRef", {{"fieldPath", "spec.nodeName"}}}}}},
           {{"name", "POD_NAME"}, {"valueFrom", {{"fieldRef", {{"fieldPath", "metadata.name"}}}}}},
           {{"name", "POD_IP"}, {"valueFrom", {{"fieldRef", {{"fieldPath", "status.podIP"}}}}}},
       })},
      {"livenessProbe", probe("/healthz", 10, 6)},
      {"readinessProbe", probe("/readyz", 5, 3)},
      {"volumeMounts", mounts},
      // Root (hostPath directories are created root-owned by the kubelet, and the agent image's
      // default user is not root) but without any capability, privilege escalation or writable
      // root file system.
      {"securityContext",
       {{"runAsUser", 0},
        {"allowPrivilegeEscalation", false},
        {"readOnlyRootFilesystem", true},
        {"capabilities", {{"drop", Json::array({"ALL"})}}}}},
  };
  if (!spec.agent.image_pull_policy.empty()) {
    container["imagePullPolicy"] = spec.agent.image_pull_policy;
  }
  Json resources = Json::object();
  if (!spec.agent.requests.empty()) resources["requests"] = Quantities(spec.agent.requests);
  if (!spec.agent.limits.empty()) resources["limits"] = Quantities(spec.agent.limits);
  if (!resources.empty()) container["resources"] = resources;

  Json tolerations = Json::array();
  for (const api::Toleration& t : spec.tolerations) {
    Json j = Json::object();
    if (!t.key.empty()) j["key"] = t.key;
    if (!t.op.empty()) j["operator"] = t.op;
    if (!t.value.empty()) j["value"] = t.value;
    if (!t.effect.empty()) j["effect"] = t.effect;
    if (t.toleration_seconds) j["tolerationSeconds"] = *t.toleration_seconds;
    tolerations.push_back(j);
  }

  Json pod_spec = {
      {"containers", Json::array({container})},
      {"volumes", volumes},
      {"terminationGracePeriodSeconds", 30},
      {"securityContext", {{"seccompProfile", {{"type", "RuntimeDefault"}}}}},
      {"automountServiceAccountToken", false},
  };
  if (spec.access.IdentityEnabled() || HasPodBuilders(cache)) {
    // The agent watches its node's pods and reads the issuer's keys, or creates WheelBuilds, as
    // its own ServiceAccount.
    pod_spec["serviceAccountName"] = AgentServiceAccountName(cache);
    pod_spec["automountServiceAccountToken"] = true;
  }
  if (HasPodBuilders(cache)) {
    // Where the agent creates WheelBuilds (pypi.buildPods.namespace is $POD_NAMESPACE).
    pod_spec["containers"][0]["env"].push_back(
        {{"name", "POD_NAMESPACE"},
         {"valueFrom", {{"fieldRef", {{"fieldPath", "metadata.namespace"}}}}}});
  }
  if (!spec.node_selector.empty()) pod_spec["nodeSelector"] = Quantities(spec.node_selector);
  if (!tolerations.empty()) pod_spec["tolerations"] = tolerations;

  return {
      {"apiVersion", "apps/v1"},
      {"kind", "DaemonSet"},
      {"metadata", OwnedMetadata(cache, DaemonSetName(cache))},
      {"spec",
       {{"selector", {{"matchLabels", SelectorLabels(cache)}}},
        {"updateStrategy", {{"type", "RollingUpdate"}, {"rollingUpdate", {{"maxUnavailable", 1}}}}},
        {"template",
         {{"metadata", {{"labels", CommonLabels(cache)}, {"annotations", annotations}}},
          {"spec", pod_spec}}}}},
  };
}

Json BuildPeerService(const api::BuildCache& cache) {
  // Headless, and listing agents before they are ready: peers find each other while hydrating.
  return {
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata", OwnedMetadata(cache, PeerServiceName(cache))},
      {"spec",
       {{"clusterIP", "None"},
        {"publishNotReadyAddresses", true},
        {"selector", SelectorLabels(cache)},
        {"ports",
         Json::array(
             {{{"name", "http"}, {"port", kAgentPort}, {"targetPort", "http"}, {"protocol", "TCP"}},
              {{"name", "peer"},
               {"port", kPeerPort},
               {"targetPort", "peer"},
               {"protocol", "TCP"}}})}}}};
}

Json BuildService(const api::BuildCache& cache) {
  // internalTrafficPolicy Local: a pod always reaches the agent on its own node, through the same
  // URL on every node.
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", OwnedMetadata(cache, ServiceName(cache))},
          {"spec",
           {{"type", "ClusterIP"},
            {"internalTrafficPolicy", "Local"},
            {"selector", SelectorLabels(cache)},
            {"ports", Json::array({{{"name", "http"},
                                    {"port", kServicePort},
                                    {"targetPort", "http"},
                                    {"protocol", "TCP"}}})}}}};
}

std::string NetworkPolicyName(const api::BuildCache& cache) { return "buildcache-" + cache.name; }

Json BuildNetworkPolicy(const api::BuildCache& cache, const BuildOptions& options) {
  auto port = [](int number) { return Json{{"protocol", "TCP"}, {"port", number}}; };
  const Json agents = {{"podSelector", {{"matchLabels", SelectorLabels(cache)}}}};
  // The namespaces spec.access allows; absent: only the BuildCache's own.
  Json namespaces = Json::object();
  if (cache.spec.access.namespace_selector) {
    const api::LabelSelector& sel = *cache.spec.access.namespace_selector;
    if (!sel.match_labels.empty()) namespaces["matchLabels"] = sel.match_labels;
    if (!sel.match_expressions.empty()) {
      Json exprs = Json::array();
      for (const api::LabelSelectorRequirement& r : sel.match_expressions) {
        Json e = {{"key", r.key}, {"operator", r.op}};
        if (!r.values.empty()) e["values"] = r.values;
        exprs.push_back(std::move(e));
      }
      namespaces["matchExpressions"] = std::move(exprs);
    }
  } else {
    namespaces["matchLabels"] = {{"kubernetes.io/metadata.name", cache.ns}};
  }
  Json http_from = Json::array({agents, {{"namespaceSelector", namespaces}}});
  if (!options.operator_namespace.empty()) {
    http_from.push_back(
        {{"namespaceSelector",
          {{"matchLabels", {{"kubernetes.io/metadata.name", options.operator_namespace}}}}},
         {"podSelector",
          {{"matchLabels",
            {{kOperatorComponentLabel, kOperatorComponent},
             {"app.kubernetes.io/part-of", "buildcache"}}}}}});
  }
  return {
      {"apiVersion", "networking.k8s.io/v1"},
      {"kind", "NetworkPolicy"},
      {"metadata", OwnedMetadata(cache, NetworkPolicyName(cache))},
      {"spec",
       {{"podSelector", {{"matchLabels", SelectorLabels(cache)}}},
        {"policyTypes", Json::array({"Ingress"})},
        {"ingress",
         Json::array(
             {{{"ports", Json::array({port(kAgentPort)})}, {"from", std::move(http_from)}},
              {{"ports", Json::array({port(kPeerPort)})}, {"from", Json::array({agents})}}})}}}};
}

std::string ToYaml(const Json& value) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetMapFormat(YAML::Block);
  out.SetSeqFormat(YAML::Block);
  Emit(out, value);
  std::string text = out.c_str();
  if (!text.empty() && text.back() != '\n') text += '\n';
  return text;
}

}  // namespace buildcache::controllers
