#pragma once
// Global/read state follows a chain onto a peer (paper §III-A2: "global/read
// state is copied").  A global/read table is what an NF loaded at init and
// sealed (rules, signatures, backends); the peer runs the chain from its own
// chains directory, so its tables hold what its own config loaded.  When a
// chain scales out:
//  - the owner sends a digest of each of the chain's global/read tables with
//    the ScaleOutRequest (digests_of);
//  - the peer answers with the tables whose content differs there
//    (tables_that_differ), and refuses when the chain has other NFs or
//    tables of other sizes there: that is another chain under the same name;
//  - the owner sends each of those tables whole, in parts (send_copies);
//  - the peer collects the parts (ReadStateReceiver) and, once the last part
//    came and the whole has the announced digest, makes its table a copy of
//    the owner's, despite the seal.  From then on the peer's instances read
//    the owner's entries; a restart of the peer loads its own config again.

#include "peer/peer.pb.h"
#include "peer/service.h"
#include "state/executor.h"

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace serpens {

// SHA-256 over the entries in key order, each its key then its value.
std::string read_state_sha256(const std::map<std::string, std::string> &entries);

// The owner: a digest of every global/read table of `chain` here.
std::vector<peer::ReadStateDigest> digests_of(state::StateStore &store, const std::string &chain);

// The peer: the tables of `digests` whose content differs here.  Throws
// Error when the chain here lacks one of them or has it with other sizes.
std::vector<peer::TableName>
tables_that_differ(state::StateStore &store, const std::string &chain,
                   const google::protobuf::RepeatedPtrField<peer::ReadStateDigest> &digests);

// The owner: copies each of `tables` of `chain` to `peer_id`.  Throws Error
// with the peer's reason when it does not take one.
void send_copies(peer::PeerService &service, const std::string &peer_id, state::StateStore &store,
                 const std::string &chain, const google::protobuf::RepeatedPtrField<peer::TableName> &tables,
                 std::chrono::milliseconds timeout);

// The peer: collects copies from their parts and applies each whole one.
// Thread-safe.
class ReadStateReceiver {
public:
    explicit ReadStateReceiver(state::StateStore &store) : _store(store) {}
    // The reply to one part: Ack, or Error (parts out of order, unknown
    // table, a digest that does not match what came).
    peer::Envelope take(const std::string &peer_id, const peer::StateCopies &part);

private:
    struct Pending {
        uint32_t next_part = 0;
        std::map<std::string, std::string> entries;
    };
    state::StateStore &_store;
    std::mutex _mutex;
    std::map<std::tuple<std::string, std::string, std::string, std::string>, Pending>
        _pending; // peer, chain, nf, table
};

} // namespace serpens
