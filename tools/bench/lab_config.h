#pragma once
// The text of a lab chain: its TOML (as a chain file holds it) and the NF
// configs it refers to, generated in a directory — fw rules no test packet
// matches, ids rules, nat's pool, vpn's SAs.  Used for chains run in memory
// (lab_chain.h) and for chain files serpens-host loads (throughput).

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace serpens::bench {

// What every NF of a lab chain is configured with.
struct NfParams {
    uint32_t fw_rules = 100; // rules in the generated fw rules file (none match the traffic)
    uint64_t flows = 10000;  // sizes per-flow tables (x2, at least 65536)
    std::string fw_state = "host";
    std::string nat_external = "203.0.113.0/24"; // nat's pool (init cost grows with it)
    uint64_t mon_hosts = 0;                      // 0: sized like the per-flow tables
    uint32_t mon_fold_ms = 0;                    // 0: mon's default
};

// A chain's NF names from its dash-separated form ("fw-mon-nat").
std::vector<std::string> split_chain(const std::string &name);
// The plugin an NF name of a lab chain loads: the name itself, or noop for
// the floor NFs "lookup" and "count" (noop with that flow_state: the one
// per-flow state access a stateful NF makes per packet, and nothing else).
std::string lab_plugin(const std::string &nf);
// The chain's TOML text (NF configs included) for `nfs`, files in `dir`.
std::string lab_chain_toml(const std::filesystem::path &dir, const std::vector<std::string> &nfs,
                           const NfParams &params, const std::string &chain_name);
// Writes <dir>/fw-<n>.rules: n-1 deny rules no test packet matches (mixed
// prefix lengths, so the classifier has several tuples), then default allow.
std::string write_fw_rules(const std::filesystem::path &dir, uint32_t n);

} // namespace serpens::bench
