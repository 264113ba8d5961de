#include "operator/controllers/policy.h"

namespace buildcache::controllers {

bool ImageAllowed(std::string_view image, const std::vector<std::string>& repositories) {
  for (const std::string& repo : repositories) {
    if (repo.empty() || !image.starts_with(repo)) continue;
    std::string_view rest = image.substr(repo.size());
    if (rest.empty()) return true;
    // ":TAG" (no '/', which would make it a port followed by another path) and/or "@DIGEST".
    if (rest.front() == '@') return rest.size() > 1;
    if (rest.front() == ':') {
      std::string_view tag = rest.substr(1);
      size_t at = tag.find('@');
      std::string_view tag_only = tag.substr(0, at);
      if (tag_only.empty() || tag_only.find('/') != std::string_view::npos) continue;
      if (at != std::string_view::npos && at + 1 == tag.size()) continue;
      return true;
    }
  }
  return false;
}

std::string NormalizeHostPath(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out += c;
  }
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

namespace {

// Whether `inner` lies strictly beneath `outer` (both normalized).
bool Beneath(std::string_view inner, std::string_view outer) {
  return inner.size() > outer.size() && inner.starts_with(outer) &&
         (outer == "/" || inner[outer.size()] == '/');
}

}  // namespace

bool HostPathsOverlap(std::string_view a, std::string_view b) {
  const std::string na = NormalizeHostPath(a), nb = NormalizeHostPath(b);
  return na == nb || Beneath(na, nb) || Beneath(nb, na);
}

Status ApplyPolicy(api::BuildCache* cache, const SpecPolicy& policy, const BuildOptions& build) {
  const std::string& image = cache->spec.agent.image;
  if (!image.empty() && image != build.agent_image && !ImageAllowed(image, policy.allowed_images)) {
    std::string allowed;
    for (const std::string& r : policy.allowed_images) allowed += (allowed.empty() ? "" : ", ") + r;
    return PermissionDenied("spec.agent.image " + image +
                            " is not allowed by the operator: agents run as root on the nodes, "
                            "so only these image repositories may be used: " +
                            (allowed.empty() ? "(none besides the default image)" : allowed) +
                            "; leave spec.agent.image empty for the default image " +
                            build.agent_image);
  }
  const std::string host_path = NormalizeHostPath(cache->HostPath());
  if (!policy.host_path_root.empty() &&
      !Beneath(host_path, NormalizeHostPath(policy.host_path_root))) {
    return PermissionDenied("spec.storage.hostPath " + host_path +
                            " is not allowed by the operator: node directories must lie beneath " +
                            policy.host_path_root +
                            " (agents mount them read-write as root); leave it empty for the "
                            "default " +
                            api::DefaultHostPath(cache->ns, cache->name));
  }
  if (cache->spec.ecosystems.goproxy && cache->spec.ecosystems.goproxy->sumdb &&
      cache->spec.ecosystems.goproxy->sumdb_name.empty()) {
    if (policy.go_sumdb_name.empty()) {
      return FailedPrecondition(
          "spec.ecosystems.goproxy.sumdb is on (the default) but no checksum database is named: "
          "set spec.ecosystems.goproxy.sumdbName (the first word of `go env GOSUMDB`) or the "
          "operator's --go-sumdb-name, or set sumdb: false to store modules unverified");
    }
    cache->spec.ecosystems.goproxy->sumdb_name = policy.go_sumdb_name;
  }
  return Status::Ok();
}

std::optional<HostPathClaim> EarlierOverlappingClaim(const HostPathClaim& mine,
                                                     const std::vector<HostPathClaim>& others) {
  std::optional<HostPathClaim> first;
  auto earlier = [](const HostPathClaim& a, const HostPathClaim& b) {
    if (a.creation_timestamp != b.creation_timestamp) {
      return a.creation_timestamp < b.creation_timestamp;
    }
    return a.key < b.key;
  };
  for (const HostPathClaim& other : others) {
    if (other.key == mine.key || !HostPathsOverlap(other.host_path, mine.host_path)) continue;
    if (!earlier(other, mine)) continue;
    if (!first || earlier(other, *first)) first = other;
  }
  return first;
}

std::optional<HostPathClaim> ClaimOf(const api::Json& object) {
  if (!object.is_object() || !object.contains("metadata")) return std::nullopt;
  const api::Json& meta = object["metadata"];
  HostPathClaim claim;
  const std::string ns = meta.value("namespace", "");
  const std::string name = meta.value("name", "");
  if (ns.empty() || name.empty()) return std::nullopt;
  claim.key = ns + "/" + name;
  claim.creation_timestamp = meta.value("creationTimestamp", "");
  claim.host_path = api::DefaultHostPath(ns, name);
  if (object.contains("spec") && object["spec"].is_object() && object["spec"].contains("storage") &&
      object["spec"]["storage"].is_object()) {
    const api::Json& path = object["spec"]["storage"].value("hostPath", api::Json());
    if (path.is_string() && !path.get_ref<const std::string&>().empty()) {
      claim.host_path = path.get<std::string>();
    }
  }
  if (claim.host_path.empty() || claim.host_path.front() != '/') return std::nullopt;
  claim.host_path = NormalizeHostPath(claim.host_path);
  return claim;
}

}  // namespace buildcache::controllers
