#include "app/reload.h"

#include "chain/spec.h"
#include "config/plugin_config.h"
#include "core/clock.h"
#include "core/error.h"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace serpens {

const CompiledChain *ChainSet::find(const std::string &name) const
{
    auto it = tag_of.find(name);
    return it == tag_of.end() ? nullptr : chains[it->second].get();
}

namespace {

// Compiles every chain of the directory against `plugins`; a chain keeps the
// tag `previous` gave it, a new one gets the next.
std::shared_ptr<ChainSet> compile_chain_set(const HostConfig &cfg, std::shared_ptr<const PluginRegistry> plugins,
                                            const ChainSet *previous)
{
    auto set = std::make_shared<ChainSet>();
    set->plugins = std::move(plugins);
    if (previous != nullptr) {
        set->chains.resize(previous->chains.size()); // every old tag stays taken
    }
    for (const ChainSpec &spec : load_chain_directory(cfg.chains_dir)) {
        auto chain = compile_chain(spec, *set->plugins, &cfg.nf_defaults);
        uint32_t tag = static_cast<uint32_t>(set->chains.size());
        if (previous != nullptr) {
            if (auto it = previous->tag_of.find(chain->name); it != previous->tag_of.end()) {
                tag = it->second;
            }
        }
        if (tag == set->chains.size()) {
            set->chains.emplace_back();
        }
        set->tag_of[chain->name] = tag;
        set->documents[chain->name] = spec.document;
        set->chains[tag] = std::move(chain);
    }
    return set;
}

} // namespace

std::shared_ptr<const ChainSet> load_chain_set(const HostConfig &cfg)
{
    auto plugins = std::make_shared<PluginRegistry>();
    plugins->load_directory(cfg.plugin_dir);
    std::shared_ptr<ChainSet> set = compile_chain_set(cfg, plugins, nullptr);
    for (const auto &chain : set->chains) {
        spdlog::info("chain {}", chain->describe());
    }
    if (set->chains.empty()) {
        spdlog::warn("no chain in {}: every packet follows the gateway default", cfg.chains_dir);
    }
    for (const auto &[plugin, table] : cfg.nf_defaults.by_plugin) {
        if (plugins->find(plugin) == nullptr) {
            spdlog::warn("{}:{}: [nf_defaults.{}]: no plugin '{}' is loaded from {}", cfg.file,
                         table->source().begin.line, plugin, plugin, cfg.plugin_dir);
        }
    }
    return set;
}

uint16_t egress_port_of(const HostConfig &cfg, const CompiledChain &chain)
{
    if (chain.egress.empty()) {
        if (cfg.ports.size() == 1) {
            return 0;
        }
        throw ConfigError(chain.file, chain.egress_line, chain.egress_column,
                          "chain '" + chain.name + "' has no 'egress' and the host has " +
                              std::to_string(cfg.ports.size()) + " ports: name one");
    }
    for (std::size_t i = 0; i < cfg.ports.size(); ++i) {
        if (cfg.ports[i].name == chain.egress) {
            return static_cast<uint16_t>(i);
        }
    }
    std::string known;
    for (const auto &port : cfg.ports) {
        known += (known.empty() ? "" : ", ") + port.name;
    }
    throw ConfigError(chain.file, chain.egress_line, chain.egress_column,
                      "chain '" + chain.name + "': egress port '" + chain.egress + "' is not a port of " + cfg.file +
                          " (ports: " + known + ")");
}

Reloader::Reloader(const HostConfig &cfg, InstanceManager &manager, std::shared_ptr<const ChainSet> initial)
    : _cfg(cfg), _manager(manager), _current(std::move(initial))
{}

std::shared_ptr<const ChainSet> Reloader::current() const
{
    std::lock_guard lock(_mutex);
    return _current;
}

ReloadReport Reloader::reload(const std::vector<std::string> &force)
{
    std::lock_guard lock(_mutex);
    const uint64_t start = monotonic_ns();
    const ChainSet &old = *_current;
    ReloadReport report;

    std::set<std::string> running;
    for (const ChainSummary &chain : _manager.chain_summaries()) {
        running.insert(chain.name);
    }
    for (const std::string &name : force) {
        if (old.find(name) == nullptr) {
            throw Error("reload: no chain '" + name + "' on this host");
        }
    }

    auto plugins = std::make_shared<PluginRegistry>(old.plugins.get());
    plugins->load_directory(_cfg.plugin_dir);
    for (const PluginRefusal &refusal : plugins->refusals()) {
        report.refusals.push_back(refusal.message);
    }
    for (const std::string &name : plugins->names()) {
        if (const Plugin *before = old.plugins->find(name); before != nullptr && before != plugins->find(name)) {
            report.plugins_changed.push_back(name);
        }
    }
    std::shared_ptr<ChainSet> next;
    try {
        next = compile_chain_set(_cfg, plugins, &old);
    } catch (const Error &e) {
        if (report.refusals.empty()) {
            throw;
        }
        // A chain may fail to compile because its plugin was refused just
        // now (a rebuilt file with bad permissions): say that too.
        std::string why = e.what();
        for (const std::string &refusal : report.refusals) {
            why += "; plugin refused: " + refusal;
        }
        throw Error(why);
    }

    std::vector<ChainUpdate> updates;
    for (const auto &[name, tag] : old.tag_of) {
        if (next->tag_of.count(name) == 0) {
            if (running.count(name) != 0) {
                throw Error("reload: chain '" + name + "' runs on this host and its file is gone from " +
                            _cfg.chains_dir + "; put it back (a running chain goes with a restart)");
            }
            report.removed.push_back(name);
        }
    }
    for (const auto &[name, tag] : next->tag_of) {
        const CompiledChain &chain = *next->chains[tag];
        const CompiledChain *before = old.find(name);
        if (before == nullptr) {
            egress_port_of(_cfg, chain); // as a start checks every chain
            report.added.push_back(name);
            continue;
        }
        bool changed = *old.documents.at(name) != *next->documents.at(name) ||
                       std::find(force.begin(), force.end(), name) != force.end() ||
                       chain.nfs.size() != before->nfs.size();
        for (std::size_t i = 0; !changed && i < chain.nfs.size(); ++i) {
            changed = chain.nfs[i].plugin != before->nfs[i].plugin;
        }
        // A file its NFs read (fw's rules), edited since: the running version
        // keeps what it read, so only a swap takes the new contents.
        for (const CompiledNf &nf : before->nfs) {
            for (std::string &file : config::changed_files(*nf.config)) {
                changed = true;
                if (std::find(report.files_changed.begin(), report.files_changed.end(), file) ==
                    report.files_changed.end()) {
                    report.files_changed.push_back(std::move(file));
                }
            }
        }
        if (!changed) {
            // The running version stays: its instances are never touched.
            next->chains[tag] = old.chains[tag];
            report.unchanged.push_back(name);
            continue;
        }
        const uint16_t egress = egress_port_of(_cfg, chain);
        if (running.count(name) == 0) {
            report.updated.push_back(name);
            continue;
        }
        updates.push_back({name, next->chains[tag], egress});
        report.reloaded.push_back(name);
    }
    // Every new instance is created before any is swapped in: a refusal here
    // leaves the running ones alone.
    report.swaps = _manager.replace(updates);
    _retired_plugins.push_back(_current->plugins);
    _current = std::move(next);
    report.took_ns = monotonic_ns() - start;
    auto list = [](const std::vector<std::string> &names) {
        return names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", "));
    };
    spdlog::info("reload done in {:.1f} ms: swapped {}; {} unchanged; added {}; removed {}; new plugin builds {}; "
                 "files changed {}",
                 static_cast<double>(report.took_ns) / 1e6, list(report.reloaded), report.unchanged.size(),
                 list(report.added), list(report.removed), list(report.plugins_changed), list(report.files_changed));
    return report;
}

} // namespace serpens
