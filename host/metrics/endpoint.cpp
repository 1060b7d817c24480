#include "metrics/endpoint.h"

#include "config/host_config.h"
#include "core/error.h"
#include "metrics/collect.h"
#include "metrics/render.h"

#include <rte_lcore.h>

#include <spdlog/spdlog.h>

namespace serpens::metrics {

std::unique_ptr<MetricsServer> start_endpoint(const HostConfig &cfg, const Dataplane &dp,
                                              const InstanceManager &manager, state::StateStore &store,
                                              const peer::PeerService *peers)
{
    if (!cfg.metrics.enabled) {
        return nullptr;
    }
    ServerOptions options;
    options.address = cfg.metrics.address;
    options.port = cfg.metrics.port;
    options.start_thread = [](pthread_t *thread, void *(*body)(void *), void *arg) {
        return rte_ctrl_thread_create(thread, "serpens-metrics", nullptr, body, arg);
    };
    try {
        auto server = std::make_unique<MetricsServer>(
            std::move(options), [&dp, &manager, &store, peers] { return render(collect(dp, manager, store, peers)); });
        spdlog::info("metrics: Prometheus endpoint on http://{}{}{}:{}/metrics",
                     cfg.metrics.address.find(':') != std::string::npos ? "[" : "", cfg.metrics.address,
                     cfg.metrics.address.find(':') != std::string::npos ? "]" : "", server->port());
        return server;
    } catch (const Error &e) {
        throw Error(cfg.file + ":" + std::to_string(cfg.metrics.line) + ": [metrics] listen: " + e.what());
    }
}

} // namespace serpens::metrics
