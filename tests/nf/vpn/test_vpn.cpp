// vpn: the AES-GCM path against the published test vectors (McGrew & Viega,
// "The Galois/Counter Mode of Operation", test cases 2-4, AES-128, 96-bit IV,
// split as RFC 4106 salt || IV), then the NF through its .so against the mock
// host: ESP layout checked by an independent decryption, round trip, unknown
// SPI, bad ICV, replay window, truncated packets, restart, config errors.

#include "gcm.h"
#include "mock_host.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>

using namespace nfmock;
using namespace nfmock::text_frames;
using serpens_vpn::Gcm;

namespace {

Bytes hex(const std::string &s)
{
    Bytes out;
    for (std::size_t i = 0; i + 1 < s.size(); i += 2) {
        out.push_back(static_cast<uint8_t>(std::stoul(s.substr(i, 2), nullptr, 16)));
    }
    return out;
}

struct Vector {
    const char *key, *salt, *iv, *plain, *aad, *cipher, *tag;
};

// The GCM spec's test cases 2, 3 and 4 (K, IV = salt || IV, P, A, C, T).
const Vector kVectors[] = {
    {"00000000000000000000000000000000", "00000000", "0000000000000000", "00000000000000000000000000000000", "",
     "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"},
    {"feffe9928665731c6d6a8f9467308308", "cafebabe", "facedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de6"
     "57ba637b391aafd255",
     "",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac9"
     "73d58e091473f5985",
     "4d5c2af327cd64a62cf35abd2ba6fab4"},
    {"feffe9928665731c6d6a8f9467308308", "cafebabe", "facedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de6"
     "57ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac9"
     "73d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"},
};

} // namespace

TEST_CASE("gcm: McGrew & Viega test cases 2-4 through the NF's cipher wrapper")
{
    for (const Vector &t : kVectors) {
        Bytes key = hex(t.key), nonce = hex(std::string(t.salt) + t.iv), aad = hex(t.aad);
        Bytes data = hex(t.plain);
        Gcm g;
        REQUIRE(g.init(key.data()));
        uint8_t tag[16];
        REQUIRE(g.seal(nonce.data(), aad.data(), aad.size(), data.data(), data.size(), tag));
        CHECK(data == hex(t.cipher));
        CHECK(Bytes(tag, tag + 16) == hex(t.tag));
        // And back; a flipped tag or AAD bit is refused.
        REQUIRE(g.open(nonce.data(), aad.data(), aad.size(), data.data(), data.size(), tag));
        CHECK(data == hex(t.plain));
        Bytes c = hex(t.cipher);
        tag[0] ^= 1;
        CHECK_FALSE(g.open(nonce.data(), aad.data(), aad.size(), c.data(), c.size(), tag));
        tag[0] ^= 1;
        if (!aad.empty()) {
            aad[0] ^= 0x80;
            c = hex(t.cipher);
            CHECK_FALSE(g.open(nonce.data(), aad.data(), aad.size(), c.data(), c.size(), tag));
        }
    }
}

namespace {

const char *kKey = "0x0123456789abcdef0123456789abcdef01020304";

std::string sa(uint32_t spi, const char *dir, const std::string &extra = "")
{
    return "[[config.sa]]\nspi = " + std::to_string(spi) + "\ndirection = \"" + dir + "\"\nkey = \"" + kKey +
           "\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.2\"\n" + extra;
}

// Independent ESP decryption with OpenSSL directly (not the NF's wrapper).
Bytes esp_decrypt(const Bytes &esp, bool &ok)
{
    Bytes km = hex(std::string(kKey + 2));
    Bytes nonce(km.begin() + 16, km.end());
    nonce.insert(nonce.end(), esp.begin() + 8, esp.begin() + 16);
    std::size_t clen = esp.size() - 16 - 16;
    Bytes out(clen);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0;
    ok = EVP_DecryptInit_ex(c, EVP_aes_128_gcm(), nullptr, nullptr, nullptr) == 1 &&
         EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) == 1 &&
         EVP_DecryptInit_ex(c, nullptr, nullptr, km.data(), nonce.data()) == 1 &&
         EVP_DecryptUpdate(c, nullptr, &n, esp.data(), 8) == 1 &&
         EVP_DecryptUpdate(c, out.data(), &n, esp.data() + 16, static_cast<int>(clen)) == 1 &&
         EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, const_cast<uint8_t *>(esp.data() + 16 + clen)) == 1 &&
         EVP_DecryptFinal_ex(c, out.data() + n, &n) == 1;
    EVP_CIPHER_CTX_free(c);
    return out;
}

} // namespace

TEST_CASE("vpn: outbound ESP layout decrypts independently to the inner packet")
{
    MockHost h(VPN_PLUGIN);
    h.set_config(sa(0x1001, "out", "src = \"10.1.0.0/16\"\n"));
    Ctx *c = nullptr;
    REQUIRE_MESSAGE(h.init(c) == SERPENS_OK, h.all_logs());
    Flow f{false, "10.1.2.3", "10.2.0.9", 17, 5000, 53};
    Bytes original = frame(f, "hello through the tunnel");
    Bytes small = frame({false, "10.1.2.3", "10.2.0.9", 6, 5000, 80}); // 54 bytes: would be padded to 60
    small.resize(60, 0);
    Packet p(original), q(small), other(frame({false, "172.16.0.1", "10.2.0.9", 17, 1, 2}));
    auto ports = h.run(*c, {&p, &q, &other});
    CHECK(ports == std::vector<uint8_t>{0, 0, 0});
    CHECK(c->counter("encrypted") == 2);
    CHECK(c->counter("bypassed") == 1);
    CHECK(other.bytes() == frame({false, "172.16.0.1", "10.2.0.9", 17, 1, 2}));

    for (int k = 0; k < 2; ++k) {
        Bytes out = k == 0 ? p.bytes() : q.bytes();
        Bytes inner =
            k == 0 ? Bytes(original.begin() + 14, original.end()) : Bytes(small.begin() + 14, small.begin() + 54);
        CHECK(out[12] == 0x08);
        CHECK(out[13] == 0x00);
        const uint8_t *ip = out.data() + 14;
        CHECK(ip[0] == 0x45);
        CHECK(ip[9] == 50);
        CHECK((ip[2] << 8 | ip[3]) == out.size() - 14);
        CHECK(csum(ip, 20) == 0);
        CHECK(Bytes(ip + 12, ip + 20) == Bytes{192, 0, 2, 1, 198, 51, 100, 2});
        Bytes esp(out.begin() + 34, out.end());
        CHECK(Bytes(esp.begin(), esp.begin() + 4) == Bytes{0, 0, 0x10, 0x01});
        CHECK(Bytes(esp.begin() + 4, esp.begin() + 8) == Bytes{0, 0, 0, static_cast<uint8_t>(k + 1)});
        CHECK((esp.size() - 16 - 16) % 4 == 0);
        bool ok = false;
        Bytes plain = esp_decrypt(esp, ok);
        REQUIRE(ok);
        uint8_t pad = plain[plain.size() - 2];
        CHECK(plain.back() == 4);
        for (uint8_t i = 0; i < pad; ++i) {
            CHECK(plain[inner.size() + i] == i + 1);
        }
        CHECK(Bytes(plain.begin(), plain.end() - 2 - pad) == inner);
        // The view describes the new outer packet.
        const serpens_pkt &v = k == 0 ? p.view : q.view;
        CHECK(v.l3_offset == 14);
        CHECK(v.l4_offset == 34);
        CHECK(v.l4_proto == 50);
    }
}

TEST_CASE("vpn: round trip, unknown SPI, bad ICV, replay window, truncated ESP")
{
    MockHost out(VPN_PLUGIN), in(VPN_PLUGIN);
    out.set_config(sa(0x2002, "out", "src = \"10.0.0.0/8\"\n") + sa(0x3003, "out", "dst = \"2001:db8::/32\"\n"));
    in.set_config(sa(0x2002, "in") + sa(0x3003, "in"));
    Ctx *co = nullptr, *ci = nullptr;
    REQUIRE_MESSAGE(out.init(co) == SERPENS_OK, out.all_logs());
    REQUIRE_MESSAGE(in.init(ci) == SERPENS_OK, in.all_logs());

    // 70 packets, IPv4 and IPv6, encrypted then decrypted: the originals come back.
    std::vector<Bytes> originals;
    std::vector<std::unique_ptr<Packet>> esp;
    for (int i = 0; i < 70; ++i) {
        Flow f = i % 3 == 0 ? Flow{true, "2001:db8:1::1", "2001:db8:2::2", 6, static_cast<uint16_t>(1000 + i), 443}
                            : Flow{false, "10.0.0.1", "10.0.0.2", 17, static_cast<uint16_t>(1000 + i), 53};
        originals.push_back(frame(f, std::string(static_cast<std::size_t>(i), 'x')));
        esp.push_back(std::make_unique<Packet>(originals.back()));
        CHECK(out.run1(*co, *esp.back()) == 0);
        esp.back()->reparse(); // as the peer's host parses what arrives
    }
    CHECK(co->counter("encrypted") == 70);
    std::vector<Bytes> wire;
    for (auto &p : esp) {
        wire.push_back(p->bytes());
    }
    // Deliver the first 60 in order, then 62..69, keep 60 and 61 for later.
    for (int i = 0; i < 70; ++i) {
        if (i == 60 || i == 61) {
            continue;
        }
        Packet p(wire[static_cast<std::size_t>(i)]);
        REQUIRE(in.run1(*ci, p) == 0);
        CHECK(p.bytes() == originals[static_cast<std::size_t>(i)]);
        CHECK(p.view.l4_proto == (i % 3 == 0 ? 6 : 17));
        CHECK(p.view.l3_type == (i % 3 == 0 ? SERPENS_L3_IPV6 : SERPENS_L3_IPV4));
    }
    CHECK(ci->counter("decrypted") == 68);
    // Late but inside the window: accepted once, then a replay.
    Packet late(wire[60]), again(wire[60]), replay(wire[5]);
    CHECK(in.run1(*ci, late) == 0);
    CHECK(in.run1(*ci, again) == SERPENS_PORT_DROP);
    CHECK(ci->counter("replay") == 1);
    // A packet already accepted long ago on the IPv4 SA (packet 5, seq 4).
    CHECK(in.run1(*ci, replay) == SERPENS_PORT_DROP);
    CHECK(ci->counter("replay") == 2);

    // Bad ICV: one ciphertext bit flipped.
    Bytes tampered = wire[61];
    tampered[tampered.size() - 20] ^= 0x01;
    Packet bad(tampered);
    CHECK(in.run1(*ci, bad) == SERPENS_PORT_DROP);
    CHECK(ci->counter("bad_icv") == 1);
    // ... and the window did not move: the genuine packet still gets in.
    Packet good(wire[61]);
    CHECK(in.run1(*ci, good) == 0);

    // Unknown SPI.
    Bytes unknown = wire[10];
    unknown[34 + 3] ^= 0x40;
    Packet u(unknown);
    CHECK(in.run1(*ci, u) == SERPENS_PORT_DROP);
    CHECK(ci->counter("unknown_spi") == 1);

    // Truncated ESP: IP length consistent, but too short for IV + trailer + ICV.
    Bytes cut(wire[10].begin(), wire[10].begin() + 34 + 20);
    cut[16] = 0;
    cut[17] = 40;
    cut[24] = cut[25] = 0;
    uint16_t s = csum(cut.data() + 14, 20);
    cut[24] = static_cast<uint8_t>(s >> 8);
    cut[25] = static_cast<uint8_t>(s);
    Packet tp(cut);
    CHECK(in.run1(*ci, tp) == SERPENS_PORT_DROP);
    CHECK(ci->counter("malformed") == 1);
    // A view cut after parsing (frame shorter than the IP length says).
    Packet short_view(wire[11]);
    short_view.view.len -= 30;
    CHECK(in.run1(*ci, short_view) == SERPENS_PORT_DROP);
    CHECK(ci->counter("malformed") == 2);
    CHECK(in.table("seq") != nullptr);
    CHECK(in.table("sas")->flags() == (SERPENS_STATE_PER_FLOW | SERPENS_STATE_READ | SERPENS_STATE_NF_EXPIRY));
    CHECK(in.table("seq")->flags() == (SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE | SERPENS_STATE_NF_EXPIRY));
}

TEST_CASE("vpn: a restarted instance continues the sequence (no nonce reuse) and keeps its window")
{
    MockHost h(VPN_PLUGIN);
    h.set_config(sa(0x4004, "out") + sa(0x4004, "in"));
    Ctx *c = nullptr;
    REQUIRE(h.init(c) == SERPENS_OK);
    Packet a(frame({}));
    CHECK(h.run1(*c, a) == 0);
    Bytes first = a.bytes();
    h.fini(*c);
    Ctx *c2 = nullptr;
    REQUIRE(h.init(c2) == SERPENS_OK);
    Packet b(frame({}));
    CHECK(h.run1(*c2, b) == 0);
    Bytes second = b.bytes();
    CHECK(second[34 + 7] == 2); // seq 2 after the restart, not 1 again
    CHECK(Bytes(first.begin() + 42, first.begin() + 50) != Bytes(second.begin() + 42, second.begin() + 50));
    // Inbound on the same SA: accept 2, restart, a replay of 2 is still refused.
    Packet in2(second);
    CHECK(h.run1(*c2, in2) == 0);
    h.fini(*c2);
    Ctx *c3 = nullptr;
    REQUIRE(h.init(c3) == SERPENS_OK);
    Packet in2again(second), in1(first);
    CHECK(h.run1(*c3, in2again) == SERPENS_PORT_DROP);
    CHECK(h.run1(*c3, in1) == 0); // 1 is inside the window and was never seen
    CHECK(c3->counter("replay") == 1);
}

TEST_CASE("vpn: an SA quiet for longer than the host's flow timeout keeps its sequence and its inbound entry")
{
    constexpr uint64_t kSec = 1000000000ull;
    MockHost h(VPN_PLUGIN);
    serpens::state::StoreOptions o;
    o.flow_idle_timeout_ns = 10 * kSec;
    h.set_store_options(o);
    h.set_config(sa(0x6006, "out") + sa(0x6006, "in"));
    Ctx *c = nullptr;
    REQUIRE(h.init(c) == SERPENS_OK);
    Packet a(frame({}));
    CHECK(h.run1(*c, a, kSec) == 0);
    const Bytes first = a.bytes();
    // A minute later, ticked through as the host's control thread does.
    for (uint64_t t = 2; t <= 60; ++t) {
        h.tick(t * kSec);
    }
    Packet b(frame({}));
    CHECK(h.run1(*c, b, 61 * kSec) == 0);
    const Bytes second = b.bytes();
    CHECK(second[34 + 7] == 2); // seq 2, not 1 again: no GCM nonce reused
    CHECK(Bytes(first.begin() + 42, first.begin() + 50) != Bytes(second.begin() + 42, second.begin() + 50));
    // The peer's ESP still finds the inbound SA.
    Packet in(second);
    CHECK(h.run1(*c, in, 62 * kSec) == 0);
    CHECK(c->counter("decrypted") == 1);
    CHECK(c->counter("unknown_spi") == 0);
}

TEST_CASE("vpn: state = \"local\" without host tables; never a silent fallback; bad config names file:line")
{
    MockHost h(VPN_PLUGIN, /*with_state=*/false);
    // Per-instance sequence numbers restart from zero: only when asked for.
    h.set_config(sa(0x5005, "out") + sa(0x5005, "in"));
    Ctx *refused = nullptr;
    CHECK(h.init(refused) == SERPENS_ENOTSUP);
    CHECK(h.logged("the host could not create the vpn tables"));
    h.set_config("state = \"local\"\n" + sa(0x5005, "out") + sa(0x5005, "in"));
    Ctx *c = nullptr;
    REQUIRE(h.init(c) == SERPENS_OK);
    CHECK(h.logged("per-instance state"));
    Bytes orig = frame({false, "10.9.9.9", "10.8.8.8", 17, 7, 9}, "abc");
    Packet p(orig);
    CHECK(h.run1(*c, p) == 0);
    p.reparse();
    CHECK(h.run1(*c, p) == 0);
    CHECK(p.bytes() == orig);

    struct Case {
        std::string text, needle;
    } cases[] = {
        {"", "needs at least one"},
        {sa(100, "out"), "chain.toml:3"},
        {sa(0x1000, "sideways"), "chain.toml:4"},
        {"[[config.sa]]\nspi = 4096\ndirection = \"out\"\nkey = \"0x1234\"\nlocal = \"192.0.2.1\"\nremote = "
         "\"1.2.3.4\"\n",
         "chain.toml:5:"},
        {sa(0x1000, "out", "src = \"10.0.0.0/8\"\ndst = \"2001:db8::/32\"\n"), "other address IPv4"},
        {sa(0x1000, "out", "src = \"10.1.0.0/8\"\n"), "did you mean 10.0.0.0/8?"},
        {sa(0x1000, "in", "src = \"10.0.0.0/8\"\n"), "\"out\" SAs only"},
        {sa(0x1000, "out") + sa(0x1000, "out"), "same spi and direction"},
        {"[[config.sa]]\nspi = 4096\ndirection = \"out\"\nkey = \"" + std::string(kKey) +
             "\"\nlocal = \"192.0.2.300\"\nremote = \"1.2.3.4\"\n",
         "chain.toml:6:"},
        {"[[config.sa]]\nspi = 4096\ndirection = \"out\"\nkey = \"" + std::string(kKey) +
             "\"\nlocal = \"0.0.0.0\"\nremote = \"1.2.3.4\"\n",
         "0.0.0.0 is not a unicast address"},
        {"[[config.sa]]\nspi = 4096\ndirection = \"out\"\nkey = \"" + std::string(kKey) +
             "\"\nlocal = \"192.0.2.1\"\nremote = \"239.1.2.3\"\n",
         "239.1.2.3 is not a unicast address"},
        {"[[config.sa]]\nspi = 4096\ndirection = \"out\"\nkey = \"" + std::string(kKey) +
             "\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.1\"\n",
         "`remote` is `local`"},
    };
    for (const Case &k : cases) {
        MockHost b(VPN_PLUGIN);
        b.set_config(k.text);
        Ctx *x = nullptr;
        INFO(k.text);
        CHECK(b.init(x) == SERPENS_EINVAL);
        CHECK_MESSAGE(b.logged(k.needle), b.all_logs());
    }
}
