#include "chain/compiled.h"

#include "core/error.h"
#include "plugin/registry.h"

#include <algorithm>
#include <map>
#include <queue>
#include <sstream>

namespace serpens {
namespace {

std::string join(const std::vector<std::string> &names, const char *sep)
{
    std::string out;
    for (const auto &name : names) {
        out += (out.empty() ? "" : sep) + name;
    }
    return out;
}

class ChainCompiler {
public:
    ChainCompiler(const ChainSpec &spec, const PluginRegistry &plugins, const config::NfDefaults *defaults)
        : _spec(spec), _plugins(plugins), _defaults(defaults)
    {}

    std::shared_ptr<const CompiledChain> run()
    {
        index_nfs();
        build_edges();
        std::size_t entry = find_entry();
        check_reachable(entry);
        check_acyclic(entry);
        return emit(topological_order());
    }

private:
    static constexpr std::size_t target_out = SIZE_MAX - 1;
    static constexpr std::size_t target_drop = SIZE_MAX;

    [[noreturn]] void fail(const SourcePos &where, const std::string &message) const
    {
        throw ConfigError(_spec.file, where.line, where.column, "chain '" + _spec.name + "': " + message);
    }

    void index_nfs()
    {
        for (std::size_t i = 0; i < _spec.nfs.size(); ++i) {
            const NfSpec &nf = _spec.nfs[i];
            if (!_index.emplace(nf.name, i).second) {
                fail(nf.where, "NF name '" + nf.name + "' is used twice in this chain");
            }
            std::shared_ptr<const Plugin> plugin = _plugins.share(nf.plugin);
            if (plugin == nullptr) {
                auto loaded = _plugins.names();
                fail(nf.plugin_where, "unknown NF plugin '" + nf.plugin + "' for NF '" + nf.name + "' (loaded: " +
                                          (loaded.empty() ? std::string("none") : join(loaded, ", ")) + ")");
            }
            _descs.push_back(&plugin->descriptor());
            _plugin_of.push_back(std::move(plugin));
        }
        _out.assign(_spec.nfs.size(), {});
    }

    std::size_t resolve(const std::string &name, const EdgeSpec &edge, bool allow_targets) const
    {
        if (allow_targets && name == chain_target_out) {
            return target_out;
        }
        if (allow_targets && name == chain_target_drop) {
            return target_drop;
        }
        auto it = _index.find(name);
        if (it == _index.end()) {
            std::vector<std::string> known;
            for (const auto &nf : _spec.nfs) {
                known.push_back(nf.name);
            }
            fail(edge.where, "unknown NF '" + name + "' in " + edge.via + " (this chain's NFs: " + join(known, ", ") +
                                 (allow_targets ? "; or 'out', 'drop')" : ")"));
        }
        return it->second;
    }

    void build_edges()
    {
        for (const EdgeSpec &edge : _spec.edges) {
            std::size_t from = resolve(edge.from, edge, false);
            std::size_t to = resolve(edge.to, edge, true);
            const serpens_nf_descriptor *desc = _descs[from];
            if (edge.port >= desc->n_ports) {
                fail(edge.where, "port " + std::to_string(edge.port) + " out of range: NF '" + edge.from +
                                     "' (plugin " + desc->name + ") has " + std::to_string(desc->n_ports) +
                                     " output port(s), 0.." + std::to_string(desc->n_ports - 1));
            }
            auto [it, inserted] = _out[from].emplace(edge.port, Target{to, edge});
            if (!inserted && it->second.node != to) {
                fail(edge.where, "port " + std::to_string(edge.port) + " of NF '" + edge.from + "' already goes to '" +
                                     it->second.edge.to + "' (" + it->second.edge.via + " at line " +
                                     std::to_string(it->second.edge.where.line) + ")");
            }
        }
    }

    std::size_t find_entry() const
    {
        if (!_spec.entry.empty()) {
            EdgeSpec pseudo{_spec.entry, 0, _spec.entry, "entry", _spec.where};
            return resolve(_spec.entry, pseudo, false);
        }
        std::vector<bool> has_incoming(_spec.nfs.size(), false);
        for (const auto &ports : _out) {
            for (const auto &[port, target] : ports) {
                if (target.node < _spec.nfs.size()) {
                    has_incoming[target.node] = true;
                }
            }
        }
        std::vector<std::size_t> roots;
        for (std::size_t i = 0; i < has_incoming.size(); ++i) {
            if (!has_incoming[i]) {
                roots.push_back(i);
            }
        }
        if (roots.empty()) {
            // Every NF has an incoming edge, so the graph has a cycle: name
            // it and the edge that closes it, as when 'entry' is set.
            for (std::size_t i = 0; i < _spec.nfs.size(); ++i) {
                check_acyclic(i);
            }
        }
        if (roots.size() != 1) {
            std::vector<std::string> names;
            for (std::size_t r : roots) {
                names.push_back(_spec.nfs[r].name);
            }
            fail(_spec.where, roots.empty() ? std::string("no entry NF: every NF has an incoming edge (a cycle?); "
                                                          "set 'entry'")
                                            : "ambiguous entry: NFs " + join(names, ", ") +
                                                  " have no incoming edge; set 'entry' or connect them");
        }
        return roots.front();
    }

    void check_reachable(std::size_t entry) const
    {
        std::vector<bool> seen(_spec.nfs.size(), false);
        std::vector<std::size_t> stack{entry};
        seen[entry] = true;
        while (!stack.empty()) {
            std::size_t node = stack.back();
            stack.pop_back();
            for (const auto &[port, target] : _out[node]) {
                if (target.node < seen.size() && !seen[target.node]) {
                    seen[target.node] = true;
                    stack.push_back(target.node);
                }
            }
        }
        for (std::size_t i = 0; i < seen.size(); ++i) {
            if (!seen[i]) {
                fail(_spec.nfs[i].where,
                     "NF '" + _spec.nfs[i].name + "' is unreachable from the entry NF '" + _spec.nfs[entry].name + "'");
            }
        }
    }

    // Depth-first search with an explicit stack (a chain of SERPENS_MAX_CHAIN_NFS
    // NFs must not cost as many native frames); the stack is the current path,
    // so a back edge names the whole cycle.
    void check_acyclic(std::size_t entry) const
    {
        enum class Mark { none, active, done };
        struct Frame {
            std::size_t node;
            std::map<uint32_t, Target>::const_iterator next;
        };
        std::vector<Mark> mark(_spec.nfs.size(), Mark::none);
        std::vector<Frame> stack;
        mark[entry] = Mark::active;
        stack.push_back({entry, _out[entry].begin()});
        while (!stack.empty()) {
            Frame &top = stack.back();
            if (top.next == _out[top.node].end()) {
                mark[top.node] = Mark::done;
                stack.pop_back();
                continue;
            }
            const Target &target = top.next->second;
            ++top.next;
            if (target.node >= mark.size()) {
                continue;
            }
            if (mark[target.node] == Mark::active) {
                std::vector<std::string> names;
                auto start = std::find_if(stack.begin(), stack.end(),
                                          [&](const Frame &frame) { return frame.node == target.node; });
                for (auto it = start; it != stack.end(); ++it) {
                    names.push_back(_spec.nfs[it->node].name);
                }
                names.push_back(_spec.nfs[target.node].name);
                fail(target.edge.where, "cycle " + join(names, " -> ") + ": a chain must be a DAG");
            }
            if (mark[target.node] == Mark::none) {
                mark[target.node] = Mark::active;
                stack.push_back({target.node, _out[target.node].begin()});
            }
        }
    }

    // Kahn's algorithm; among ready NFs the one declared first goes first, so
    // the order is stable and follows the file.
    std::vector<std::size_t> topological_order() const
    {
        std::vector<std::size_t> indegree(_spec.nfs.size(), 0);
        for (const auto &ports : _out) {
            std::vector<std::size_t> counted;
            for (const auto &[port, target] : ports) {
                if (target.node < indegree.size() &&
                    std::find(counted.begin(), counted.end(), target.node) == counted.end()) {
                    ++indegree[target.node];
                    counted.push_back(target.node);
                }
            }
        }
        std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> ready;
        for (std::size_t i = 0; i < indegree.size(); ++i) {
            if (indegree[i] == 0) {
                ready.push(i);
            }
        }
        std::vector<std::size_t> order;
        while (!ready.empty()) {
            std::size_t node = ready.top();
            ready.pop();
            order.push_back(node);
            std::vector<std::size_t> released;
            for (const auto &[port, target] : _out[node]) {
                if (target.node < indegree.size() &&
                    std::find(released.begin(), released.end(), target.node) == released.end()) {
                    released.push_back(target.node);
                    if (--indegree[target.node] == 0) {
                        ready.push(target.node);
                    }
                }
            }
        }
        return order;
    }

    std::shared_ptr<const CompiledChain> emit(const std::vector<std::size_t> &order) const
    {
        auto chain = std::make_shared<CompiledChain>();
        chain->name = _spec.name;
        chain->file = _spec.file;
        chain->egress = _spec.egress;
        chain->egress_line = _spec.egress_where.line;
        chain->egress_column = _spec.egress_where.column;
        std::vector<uint16_t> label_of(_spec.nfs.size(), 0);
        for (std::size_t pos = 0; pos < order.size(); ++pos) {
            label_of[order[pos]] = static_cast<uint16_t>(pos + 1);
        }
        auto label_for = [&](std::size_t target) -> uint16_t {
            if (target == target_out) {
                return SERPENS_LABEL_OUT;
            }
            if (target == target_drop) {
                return SERPENS_LABEL_DROP;
            }
            return label_of[target];
        };
        for (std::size_t pos = 0; pos < order.size(); ++pos) {
            std::size_t node = order[pos];
            const NfSpec &spec = _spec.nfs[node];
            CompiledNf nf;
            nf.name = spec.name;
            nf.plugin = _plugin_of[node];
            nf.desc = _descs[node];
            nf.label = label_of[node];
            nf.n_ports = nf.desc->n_ports;
            auto config = std::make_shared<serpens_config>();
            static const toml::table empty_config;
            config->document = _spec.document;
            config->table = spec.config != nullptr ? spec.config : &empty_config;
            config->file = _spec.file;
            config->directory = _spec.directory;
            config->nf_name = spec.name;
            config->plugin = nf.desc->name;
            if (_defaults != nullptr) {
                _defaults->attach(*config);
            }
            nf.config = std::move(config);
            nf.next.fill(SERPENS_LABEL_DROP);
            // Port 0 without an edge leaves the chain; any other unconnected
            // port follows port 0, so an NF's optional branch needs no wiring.
            auto port0 = _out[node].find(0);
            uint16_t default_next = port0 == _out[node].end() ? SERPENS_LABEL_OUT : label_for(port0->second.node);
            for (uint16_t port = 0; port < nf.n_ports; ++port) {
                auto it = _out[node].find(port);
                nf.next[port] = it == _out[node].end() ? default_next : label_for(it->second.node);
            }
            chain->nfs.push_back(std::move(nf));
        }
        return chain;
    }

    struct Target {
        std::size_t node;
        EdgeSpec edge;
    };

    const ChainSpec &_spec;
    const PluginRegistry &_plugins;
    const config::NfDefaults *_defaults;
    std::map<std::string, std::size_t> _index;
    std::vector<const serpens_nf_descriptor *> _descs;
    std::vector<std::shared_ptr<const Plugin>> _plugin_of;
    std::vector<std::map<uint32_t, Target>> _out; // per NF: port -> target
};

std::string label_name(const CompiledChain &chain, uint16_t label)
{
    if (label == SERPENS_LABEL_OUT) {
        return "out";
    }
    if (label == SERPENS_LABEL_DROP) {
        return "drop";
    }
    return chain.nfs[label - 1].name + "(" + std::to_string(label) + ")";
}

} // namespace

std::string CompiledChain::describe() const
{
    std::ostringstream out;
    out << name << ":";
    for (const CompiledNf &nf : nfs) {
        out << " " << nf.name << "(" << nf.label << ")[" << nf.desc->name << "] ->";
        if (nf.n_ports == 1) {
            out << " " << label_name(*this, nf.next[0]);
        } else {
            out << " {";
            for (uint16_t port = 0; port < nf.n_ports; ++port) {
                out << (port ? ", " : "") << port << ": " << label_name(*this, nf.next[port]);
            }
            out << "}";
        }
        out << ";";
    }
    return out.str();
}

std::shared_ptr<const CompiledChain> compile_chain(const ChainSpec &spec, const PluginRegistry &plugins,
                                                   const config::NfDefaults *defaults)
{
    return ChainCompiler(spec, plugins, defaults).run();
}

} // namespace serpens
