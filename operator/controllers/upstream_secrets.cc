#include "operator/controllers/upstream_secrets.h"

namespace buildcache::controllers {

using api::Json;

std::vector<std::pair<std::string, api::UpstreamSecretRef>> UpstreamSecretRefs(
    const api::BuildCache& cache) {
  const api::Ecosystems& eco = cache.spec.ecosystems;
  std::vector<std::pair<std::string, api::UpstreamSecretRef>> out;
  auto add = [&](const char* name, const api::Mirror* mirror) {
    if (mirror != nullptr && mirror->upstream_secret_ref) {
      out.emplace_back(name, *mirror->upstream_secret_ref);
    }
  };
  add("pypi", eco.pypi ? &*eco.pypi : nullptr);
  add("goproxy", eco.goproxy ? &eco.goproxy->mirror : nullptr);
  add("npm", eco.npm ? &*eco.npm : nullptr);
  add("cargo", eco.cargo ? &*eco.cargo : nullptr);
  add("maven", eco.maven ? &*eco.maven : nullptr);
  return out;
}

std::vector<std::string> UpstreamSecretKeys(const std::string& type) {
  if (type == "bearer") return {"token"};
  return {"username", "password"};
}

void RenderUpstreamAuth(const api::BuildCache& cache, agent::PartialAgentConfig* out) {
  agent::AgentConfig& c = out->config();
  for (const auto& [ecosystem, ref] : UpstreamSecretRefs(cache)) {
    const std::pair<const char*, agent::UpstreamMirrorConfig*> sections[] = {
        {"pypi", &c.pypi},
        {"goproxy", &c.goproxy},
        {"npm", &c.npm},
        {"cargo", &c.cargo},
        {"maven", &c.maven}};
    agent::UpstreamMirrorConfig* section = nullptr;
    for (const auto& [name, s] : sections) {
      if (ecosystem == name) section = s;
    }
    if (section == nullptr) continue;  // UpstreamSecretRefs names only these
    const std::string dir = std::string(kUpstreamSecretsDir) + "/" + ecosystem + "/";
    if (ref.type == "bearer") {
      out->Set(section->auth.token_file, dir + "token");
    } else {
      out->Set(section->auth.username_file, dir + "username");
      out->Set(section->auth.password_file, dir + "password");
    }
  }
}

void AddUpstreamSecretVolumes(const api::BuildCache& cache, Json* volumes, Json* mounts) {
  for (const auto& [ecosystem, ref] : UpstreamSecretRefs(cache)) {
    Json items = Json::array();
    for (const std::string& key : UpstreamSecretKeys(ref.type)) {
      items.push_back({{"key", key}, {"path", key}});
    }
    const std::string volume = "upstream-" + ecosystem;
    volumes->push_back({{"name", volume},
                        {"secret",
                         {{"secretName", ref.name},
                          {"defaultMode", 0400},
                          {"optional", true},
                          {"items", std::move(items)}}}});
    // The whole directory, never a subPath: the kubelet updates a Secret volume in place only
    // when it is mounted whole.
    mounts->push_back({{"name", volume},
                       {"mountPath", std::string(kUpstreamSecretsDir) + "/" + ecosystem},
                       {"readOnly", true}});
  }
}

std::string UpstreamSecretRefsText(const api::BuildCache& cache) {
  std::string out;
  for (const auto& [ecosystem, ref] : UpstreamSecretRefs(cache)) {
    out += "upstreamSecretRef " + ecosystem + " " + ref.name + " " + ref.type + "\n";
  }
  return out;
}

std::string UpstreamSecretProblem(const api::BuildCache& cache, const std::string& ecosystem,
                                  const api::UpstreamSecretRef& ref, const Json& secret) {
  const std::string what =
      "spec.ecosystems." + ecosystem + ".upstreamSecretRef: Secret " + cache.ns + "/" + ref.name;
  if (!secret.is_object() || secret.empty()) return what + " not found";
  const Json data = secret.value("data", Json::object());
  std::string missing;
  for (const std::string& key : UpstreamSecretKeys(ref.type)) {
    if (!data.is_object() || !data.contains(key)) {
      missing += (missing.empty() ? "" : ", ") + key;
    }
  }
  if (missing.empty()) return "";
  return what + " has no key " + missing + " (type " + ref.type + " reads " +
         (ref.type == "bearer" ? "token" : "username and password") + ")";
}

}  // namespace buildcache::controllers
