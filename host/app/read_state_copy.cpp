#include "app/read_state_copy.h"

#include "core/error.h"
#include "peer/codec.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <memory>

namespace serpens {
namespace {

// The chain's global/read tables here, by (nf, table).
std::map<std::pair<std::string, std::string>, std::pair<state::Executor *, state::Table *>>
read_tables(state::StateStore &store, const std::string &chain)
{
    std::map<std::pair<std::string, std::string>, std::pair<state::Executor *, state::Table *>> tables;
    for (state::Executor *ex : store.executors()) {
        if (ex->chain() != chain) {
            continue;
        }
        for (state::Table *t : ex->tables()) {
            if (t->kind() == state::TableKind::global_read) {
                tables[{ex->nf(), std::string(t->name())}] = {ex, t};
            }
        }
    }
    return tables;
}

} // namespace

std::string read_state_sha256(const std::map<std::string, std::string> &entries)
{
    const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
    for (auto it = entries.begin(); ok && it != entries.end(); ++it) {
        ok = EVP_DigestUpdate(ctx.get(), it->first.data(), it->first.size()) == 1 &&
             EVP_DigestUpdate(ctx.get(), it->second.data(), it->second.size()) == 1;
    }
    if (!ok || EVP_DigestFinal_ex(ctx.get(), digest, &length) != 1 || length != peer::kDigestBytes) {
        throw Error("OpenSSL could not compute a SHA-256 digest of global/read state");
    }
    return {reinterpret_cast<const char *>(digest), length};
}

std::vector<peer::ReadStateDigest> digests_of(state::StateStore &store, const std::string &chain)
{
    std::vector<peer::ReadStateDigest> digests;
    for (const auto &[name, where] : read_tables(store, chain)) {
        const auto &[ex, t] = where;
        const std::map<std::string, std::string> entries = ex->read_entries(*t);
        peer::ReadStateDigest &d = digests.emplace_back();
        d.set_nf(name.first);
        d.set_table(name.second);
        d.set_sha256(read_state_sha256(entries));
        d.set_entries(entries.size());
        d.set_key_size(t->key_size());
        d.set_value_size(t->value_size());
    }
    return digests;
}

std::vector<peer::TableName>
tables_that_differ(state::StateStore &store, const std::string &chain,
                   const google::protobuf::RepeatedPtrField<peer::ReadStateDigest> &digests)
{
    const auto here = read_tables(store, chain);
    std::vector<peer::TableName> differ;
    for (const peer::ReadStateDigest &d : digests) {
        auto it = here.find({d.nf(), d.table()});
        if (it == here.end()) {
            throw Error(fmt::format("chain '{}' here has no global/read table '{}' in NF '{}': it is another chain",
                                    chain, d.table(), d.nf()));
        }
        const auto &[ex, t] = it->second;
        if (t->key_size() != d.key_size() || t->value_size() != d.value_size()) {
            throw Error(fmt::format("global/read table '{}/{}' of chain '{}' has keys of {} and values of {} bytes "
                                    "here, {} and {} on the asking host",
                                    d.nf(), d.table(), chain, t->key_size(), t->value_size(), d.key_size(),
                                    d.value_size()));
        }
        if (read_state_sha256(ex->read_entries(*t)) != d.sha256()) {
            peer::TableName &name = differ.emplace_back();
            name.set_nf(d.nf());
            name.set_table(d.table());
        }
    }
    return differ;
}

void send_copies(peer::PeerService &service, const std::string &peer_id, state::StateStore &store,
                 const std::string &chain, const google::protobuf::RepeatedPtrField<peer::TableName> &tables,
                 std::chrono::milliseconds timeout)
{
    const auto here = read_tables(store, chain);
    for (const peer::TableName &name : tables) {
        auto it = here.find({name.nf(), name.table()});
        if (it == here.end()) {
            throw Error(fmt::format("peer '{}' asked for global/read table '{}/{}', which chain '{}' does not have",
                                    peer_id, name.nf(), name.table(), chain));
        }
        const auto &[ex, t] = it->second;
        const std::map<std::string, std::string> entries = ex->read_entries(*t);
        const std::string digest = read_state_sha256(entries);
        auto next = entries.begin();
        for (uint32_t part = 0;; ++part) {
            peer::Envelope request;
            peer::StateCopies *copy = request.mutable_state_copies();
            copy->set_chain(chain);
            copy->set_nf(name.nf());
            copy->set_table(name.table());
            copy->set_part(part);
            for (std::size_t bytes = 0; next != entries.end() && bytes < peer::kBatchBytes &&
                                        static_cast<std::size_t>(copy->entries_size()) < peer::kMaxBatchItems;
                 ++next) {
                peer::Entry *entry = copy->add_entries();
                entry->set_key(next->first);
                entry->set_value(next->second);
                bytes += next->first.size() + next->second.size();
            }
            const bool last = next == entries.end();
            copy->set_last(last);
            if (last) {
                copy->set_sha256(digest);
            }
            const peer::Envelope reply = service.request(peer_id, std::move(request), timeout);
            if (reply.has_error()) {
                throw Error(
                    fmt::format("peer '{}' did not take the copy of global/read table '{}/{}' of chain '{}': {}",
                                peer_id, name.nf(), name.table(), chain, reply.error().text()));
            }
            if (last) {
                break;
            }
        }
        spdlog::info("chain '{}': global/read table '{}/{}' ({} entries) copied to peer '{}'", chain, name.nf(),
                     name.table(), entries.size(), peer_id);
    }
}

peer::Envelope ReadStateReceiver::take(const std::string &peer_id, const peer::StateCopies &part)
{
    const auto here = read_tables(_store, part.chain());
    auto it = here.find({part.nf(), part.table()});
    if (it == here.end()) {
        return peer::error_reply(peer::Error::CODE_UNKNOWN,
                                 fmt::format("chain '{}' here has no global/read table '{}' in NF '{}'", part.chain(),
                                             part.table(), part.nf()));
    }
    const auto &[ex, t] = it->second;
    std::lock_guard lock(_mutex);
    const auto id = std::make_tuple(peer_id, part.chain(), part.nf(), part.table());
    Pending &pending = _pending[id];
    if (part.part() == 0) {
        pending = Pending{};
    }
    if (const uint32_t expected = pending.next_part; part.part() != expected) {
        _pending.erase(id); // `pending` is gone from here on
        return peer::error_reply(
            peer::Error::CODE_BAD_REQUEST,
            fmt::format("copy of '{}/{}': part {} came, part {} was next; send it again from part 0", part.nf(),
                        part.table(), part.part(), expected));
    }
    for (const peer::Entry &entry : part.entries()) {
        if (entry.key().size() != t->key_size() || entry.value().size() != t->value_size()) {
            _pending.erase(id);
            return peer::error_reply(peer::Error::CODE_BAD_REQUEST,
                                     fmt::format("copy of '{}/{}': an entry of {}/{} bytes; the table here takes {}/{}",
                                                 part.nf(), part.table(), entry.key().size(), entry.value().size(),
                                                 t->key_size(), t->value_size()));
        }
        pending.entries[entry.key()] = entry.value();
    }
    if (pending.entries.size() > t->capacity()) {
        _pending.erase(id);
        return peer::error_reply(peer::Error::CODE_REFUSED,
                                 fmt::format("copy of '{}/{}': more than the {} entries the table here holds",
                                             part.nf(), part.table(), t->capacity()));
    }
    ++pending.next_part;
    if (!part.last()) {
        return peer::ack_reply();
    }
    const std::map<std::string, std::string> entries = std::move(pending.entries);
    _pending.erase(id);
    if (read_state_sha256(entries) != part.sha256()) {
        return peer::error_reply(
            peer::Error::CODE_BAD_REQUEST,
            fmt::format("copy of '{}/{}': what came does not have the announced digest", part.nf(), part.table()));
    }
    if (const int rc = ex->copy_read_state(*t, entries); rc != SERPENS_OK) {
        return peer::error_reply(
            peer::Error::CODE_INTERNAL,
            fmt::format("copy of '{}/{}': the table here did not take it ({})", part.nf(), part.table(), rc));
    }
    spdlog::info("peer '{}': global/read table '{}/{}' of chain '{}' is now its copy ({} entries)", peer_id, part.nf(),
                 part.table(), part.chain(), entries.size());
    return peer::ack_reply();
}

} // namespace serpens
