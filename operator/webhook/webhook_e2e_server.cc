// The webhook as the operator runs it, for tests/integration/test_webhook.py: CertManager makes the
// certificates (Secret + caBundle of the MutatingWebhookConfiguration) against the API server in
// KUBECONFIG, then the HTTPS server answers reviews until SIGTERM. Prints {"port":N} once serving.
//
//   webhook_e2e_server NAMESPACE WEBHOOK_CONFIGURATION [LISTEN]
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "common/kube/config.h"
#include "common/kube/event_recorder.h"
#include "common/kube/rest_kube_client.h"
#include "common/log/log.h"
#include "operator/webhook/cert_manager.h"
#include "operator/webhook/webhook_server.h"

using namespace buildcache;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: webhook_e2e_server NAMESPACE WEBHOOK_CONFIGURATION [LISTEN]\n";
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto config = kube::LoadDefaultConfig();
  if (!config.ok()) {
    std::cerr << config.status().ToString() << "\n";
    return 1;
  }
  auto client = kube::RestKubeClient::Create(*config);
  if (!client.ok()) {
    std::cerr << client.status().ToString() << "\n";
    return 1;
  }
  webhook::CertManagerOptions cert_options;
  cert_options.ns = argv[1];
  cert_options.webhook_configuration = argv[2];
  cert_options.ip_addresses = {"127.0.0.1"};
  webhook::CertManager certs(client->get(), cert_options);
  if (Status s = certs.Sync(); !s.ok()) {
    std::cerr << s.ToString() << "\n";
    return 1;
  }
  webhook::InformerCacheLookup lookup(client->get());
  lookup.Start();
  lookup.WaitForSync(std::chrono::seconds(30));
  kube::EventRecorder events(client->get(), {.instance = "webhook-e2e"});
  webhook::WebhookServerOptions options;
  options.listen = argc > 3 ? argv[3] : "127.0.0.1:0";
  options.credentials = [&certs] { return certs.Current(); };
  // The operator passes its --agent-image; tests name one in BUILDCACHE_AGENT_IMAGE.
  if (const char* image = getenv("BUILDCACHE_AGENT_IMAGE"); image != nullptr) {
    options.mutator.default_agent_image = image;
  }
  auto server = webhook::WebhookServer::Start(std::move(options), &lookup, &events);
  if (!server.ok()) {
    std::cerr << server.status().ToString() << "\n";
    return 1;
  }
  std::cout << "{\"port\":" << (*server)->port() << "}" << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  (*server)->Stop();
  return 0;
}
