#pragma once

// For unit tests: a KubeClient whose every call fails with kUnavailable naming the call. A test's
// fake derives from it and overrides only the calls the code under test makes.

#include <string>

#include "common/kube/kube_client.h"

namespace buildcache::kube::testing {

class UnusedKubeClient : public KubeClient {
 public:
  Result<Json> Get(const Resource&, const std::string&, const std::string&,
                   const std::string& = "") override {
    return Unused("Get");
  }
  Result<Json> List(const Resource&, const std::string&, const ListOptions& = {}) override {
    return Unused("List");
  }
  Result<Json> Create(const Resource&, const Json&) override { return Unused("Create"); }
  Result<Json> Update(const Resource&, const Json&, const std::string& = "") override {
    return Unused("Update");
  }
  Result<Json> MergePatch(const Resource&, const std::string&, const std::string&, const Json&,
                          const std::string& = "") override {
    return Unused("MergePatch");
  }
  Result<Json> Apply(const Resource&, const Json&, const ApplyOptions&,
                     const std::string& = "") override {
    return Unused("Apply");
  }
  Status Delete(const Resource&, const std::string&, const std::string&,
                const DeleteOptions& = {}) override {
    return Unused("Delete");
  }
  Status Watch(const Resource&, const std::string&, const WatchOptions&, const WatchHandler&,
               std::stop_token = {}) override {
    return Unused("Watch");
  }

 private:
  static Status Unused(const std::string& call) {
    return Unavailable(call + " is not used by this test's fake");
  }
};

}  // namespace buildcache::kube::testing
