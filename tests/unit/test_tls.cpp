// peer/tls: TlsSession between two nodes over a socketpair, with a CA and
// certificates made here (Ed25519): the handshake and its refusals, byte-exact
// transfers in both directions at once across every buffering threshold,
// end of file, and ciphertext that was tampered with.
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <random>

#include "hastnbd/peer/tls.h"

using namespace hastnbd;

namespace {

struct Pem {
  std::string cert, key;
};

std::string to_pem(auto write) {
  BIO* b = BIO_new(BIO_s_mem());
  write(b);
  char* p = nullptr;
  const long n = BIO_get_mem_data(b, &p);
  std::string s(p, size_t(n));
  BIO_free(b);
  return s;
}

void add_ext(X509* x, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  REQUIRE(e != nullptr);
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
}

// A certificate for `name` signed by (issuer, issuer_key), or self-signed
// as a CA when issuer is null.
struct Cert {
  EVP_PKEY* key = nullptr;
  X509* x = nullptr;
  Cert(const std::string& name, const Cert* issuer) {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    x = X509_new();
    X509_set_version(x, 2);
    static long serial = 1;
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
    X509* signer = issuer ? issuer->x : x;
    X509_set_issuer_name(x, X509_get_subject_name(signer));
    if (!issuer) {
      add_ext(x, signer, NID_basic_constraints, "critical,CA:TRUE");
      add_ext(x, signer, NID_key_usage, "critical,keyCertSign");
    } else {
      add_ext(x, signer, NID_subject_alt_name, ("DNS:" + name).c_str());
    }
    REQUIRE(X509_sign(x, issuer ? issuer->key : key, nullptr) > 0);
  }
  ~Cert() {
    X509_free(x);
    EVP_PKEY_free(key);
  }
  std::string cert_pem() const {
    return to_pem([&](BIO* b) { PEM_write_bio_X509(b, x); });
  }
  std::string key_pem() const {
    return to_pem([&](BIO* b) { PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr); });
  }
};

ResourceConfig node_config(const Cert& ca, const Cert& mine) {
  ResourceConfig c;
  c.name = "data";
  c.tls.cert = "cert.pem";
  c.tls.key = "key.pem";
  c.tls.ca = "ca.pem";
  c.tls_material.ca_pem = ca.cert_pem();
  c.tls_material.cert_pem = mine.cert_pem();
  c.tls_material.key_pem = mine.key_pem();
  return c;
}

struct Pair {
  asio::io_context io;
  std::shared_ptr<asio::ssl::context> ctx_a, ctx_b;
  Result<std::shared_ptr<TlsSession>> a = Status::Error(EINVAL, "not run");
  Result<std::shared_ptr<TlsSession>> b = Status::Error(EINVAL, "not run");

  // a is the client expecting b's certificate for `name_of_b`; b the server
  // expecting a's for "a".
  Pair(const ResourceConfig& ca, const ResourceConfig& cb, const std::string& name_of_b = "b") {
    ctx_a = *make_tls_context(ca);
    ctx_b = *make_tls_context(cb);
    asio::local::stream_protocol::socket sa(io), sb(io);
    asio::local::connect_pair(sa, sb);
    asio::co_spawn(
        io,
        [&, s = PlainSocket(std::move(sa)), name_of_b]() mutable -> awaitable<void> {
          a = co_await tls_handshake(std::move(s), *ctx_a, false, name_of_b, std::chrono::seconds(5));
          if (!a.ok() && b.ok()) (*b)->socket().close();
        },
        asio::detached);
    asio::co_spawn(
        io,
        [&, s = PlainSocket(std::move(sb))]() mutable -> awaitable<void> {
          b = co_await tls_handshake(std::move(s), *ctx_b, true, "a", std::chrono::seconds(5));
          if (!b.ok() && a.ok()) (*a)->socket().close();
        },
        asio::detached);
    io.run_for(std::chrono::seconds(10));
    io.restart();
  }
};

struct Nodes {
  Cert ca{"test-ca", nullptr};
  Cert a{"a", &ca};
  Cert b{"b", &ca};
};

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(rng());
  return v;
}

// Sends `data` as batches of buffers of the given sizes (cycled), while
// the other side reads it back in pieces of other sizes.
awaitable<void> send_all(TlsSession& s, const std::vector<uint8_t>& data, std::vector<size_t> sizes) {
  size_t off = 0, i = 0;
  while (off < data.size()) {
    std::vector<asio::const_buffer> batch;
    for (int k = 0; k < 5 && off < data.size(); ++k, ++i) {
      const size_t n = std::min(sizes[i % sizes.size()], data.size() - off);
      batch.emplace_back(data.data() + off, n);
      off += n;
    }
    error_code ec = co_await s.write(batch);
    REQUIRE_FALSE(ec);
  }
}

awaitable<void> receive_all(TlsSession& s, std::vector<uint8_t>& out, size_t total, std::vector<size_t> sizes) {
  out.resize(total);
  size_t off = 0, i = 0;
  while (off < total) {
    const size_t n = std::min(sizes[i++ % sizes.size()], total - off);
    auto [ec, got] = co_await s.read(asio::buffer(out.data() + off, n));
    REQUIRE_FALSE(ec);
    REQUIRE(got == n);
    off += n;
  }
}

}  // namespace

TEST_CASE("TLS session: handshake between nodes of one CA, TLS 1.3") {
  Nodes n;
  Pair p(node_config(n.ca, n.a), node_config(n.ca, n.b));
  REQUIRE(p.a.ok());
  REQUIRE(p.b.ok());
  CHECK((*p.a)->description().rfind("TLSv1.3 ", 0) == 0);
  CHECK((*p.b)->description() == (*p.a)->description());
  // The exporter peer/auth binds the key to: alike at both ends, its own
  // in every session.
  const auto ea = (*p.a)->exporter("EXPORTER-hastnbd-peer-auth", 32);
  CHECK(ea.size() == 32);
  CHECK(ea == (*p.b)->exporter("EXPORTER-hastnbd-peer-auth", 32));
  CHECK(ea != (*p.a)->exporter("EXPORTER-other", 32));
  Pair q(node_config(n.ca, n.a), node_config(n.ca, n.b));
  REQUIRE(q.a.ok());
  CHECK(ea != (*q.a)->exporter("EXPORTER-hastnbd-peer-auth", 32));
}

TEST_CASE("TLS session: a certificate for another name, or from another CA, is refused") {
  Nodes n;
  SECTION("wrong name") {
    Pair p(node_config(n.ca, n.a), node_config(n.ca, n.b), "c");
    REQUIRE_FALSE(p.a.ok());
    CHECK_THAT(p.a.status().message(), Catch::Contains("hostname mismatch") && Catch::Contains("'c'"));
    REQUIRE_FALSE(p.b.ok());
    CHECK_THAT(p.b.status().message(), Catch::Contains("TLS handshake"));
  }
  SECTION("other CA") {
    Cert other("other-ca", nullptr);
    Cert b2("b", &other);
    Pair p(node_config(n.ca, n.a), node_config(other, b2));
    REQUIRE_FALSE(p.a.ok());
    CHECK_THAT(p.a.status().message(), Catch::Contains("not signed by this node's tls.ca"));
    REQUIRE_FALSE(p.b.ok());
  }
}

TEST_CASE("TLS session: both directions at once, byte-exact across record and flush sizes") {
  Nodes n;
  Pair p(node_config(n.ca, n.a), node_config(n.ca, n.b));
  REQUIRE(p.a.ok());
  REQUIRE(p.b.ok());
  // 1 byte to 3 MiB: small pieces gathered, exactly 16 KiB, over a record,
  // over the 1 MiB flush size.
  const std::vector<size_t> write_sizes = {40, 4096, 1, 16384, 16383, 16385, 100000, TlsSession::kFlushBytes,
                                           TlsSession::kFlushBytes + 7, 3 << 20, 512};
  const std::vector<size_t> read_sizes = {40, 7, 65536, 1 << 20, 4096, 3 << 20, 1};
  const size_t total = 24 << 20;
  auto from_a = random_bytes(total, 1), from_b = random_bytes(total, 2);
  std::vector<uint8_t> at_a, at_b;
  int done = 0;
  auto run = [&](auto f) {
    asio::co_spawn(p.io, [&, f]() -> awaitable<void> { co_await f(); ++done; }, asio::detached);
  };
  run([&]() { return send_all(**p.a, from_a, write_sizes); });
  run([&]() { return send_all(**p.b, from_b, read_sizes); });
  run([&]() { return receive_all(**p.b, at_b, total, read_sizes); });
  run([&]() { return receive_all(**p.a, at_a, total, write_sizes); });
  p.io.run_for(std::chrono::seconds(60));
  REQUIRE(done == 4);
  CHECK(at_b == from_a);
  CHECK(at_a == from_b);
}

TEST_CASE("TLS session: the peer closing is end of file, mid-read too") {
  Nodes n;
  Pair p(node_config(n.ca, n.a), node_config(n.ca, n.b));
  REQUIRE(p.a.ok());
  REQUIRE(p.b.ok());
  std::vector<uint8_t> data(1000, 7), buf(2000);
  error_code rec;
  size_t got = 0;
  asio::co_spawn(
      p.io,
      [&]() -> awaitable<void> {
        std::vector<asio::const_buffer> bufs{asio::const_buffer(data.data(), data.size())};
        error_code wec = co_await (*p.a)->write(bufs);
        CHECK_FALSE(wec);
        (*p.a)->socket().shutdown(asio::socket_base::shutdown_send);
      },
      asio::detached);
  asio::co_spawn(
      p.io, [&]() -> awaitable<void> { std::tie(rec, got) = co_await (*p.b)->read(asio::buffer(buf)); },
      asio::detached);
  p.io.run_for(std::chrono::seconds(10));
  CHECK(rec == asio::error::eof);
  CHECK(got == 1000);
}

TEST_CASE("TLS session: ciphertext changed on the way is an error, not data") {
  Nodes n;
  Pair p(node_config(n.ca, n.a), node_config(n.ca, n.b));
  REQUIRE(p.a.ok());
  REQUIRE(p.b.ok());
  // An application-data record of the right shape whose contents are not
  // the sender's: its AEAD tag cannot verify.
  std::vector<uint8_t> forged = {0x17, 0x03, 0x03, 0x00, 0x40};
  forged.resize(5 + 0x40, 0xab);
  REQUIRE(::send((*p.a)->socket().native_handle(), forged.data(), forged.size(), 0) == ssize_t(forged.size()));
  std::vector<uint8_t> buf(16);
  error_code rec;
  asio::co_spawn(
      p.io, [&]() -> awaitable<void> { std::tie(rec, std::ignore) = co_await (*p.b)->read(asio::buffer(buf)); },
      asio::detached);
  p.io.run_for(std::chrono::seconds(10));
  REQUIRE(rec);
  CHECK(rec != asio::error::eof);
  CHECK_THAT((*p.b)->error_detail(), Catch::Contains("TLS:"));
  CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t c) { return c == 0; }));
}
