//===- RData.cpp - Minimal reader for R serialization and lazy-load DBs ---===//
//
// See RData.h for the formats. Every read is bounds-checked against the
// buffer; lengths are checked against the bytes left before allocating, so a
// corrupt length cannot make us allocate gigabytes; nesting is capped so a
// corrupt file cannot overflow the stack.
//
//===----------------------------------------------------------------------===//
#include "RData.h"

#include <zlib.h>

#include <climits>
#include <cstring>
#include <fstream>
#include <iterator>

namespace mega::rdata {

namespace {

// Special item codes of the serialization stream (not real SEXP types).
constexpr int REFSXP = 255, NILVALUE_SXP = 254, GLOBALENV_SXP = 253,
              UNBOUNDVALUE_SXP = 252, MISSINGARG_SXP = 251,
              BASENAMESPACE_SXP = 250, NAMESPACESXP = 249, PACKAGESXP = 248,
              PERSISTSXP = 247, EMPTYENV_SXP = 242, BASEENV_SXP = 241,
              ALTREP_SXP = 238;
// CHARSXP encoding bits in the `levels` field.
constexpr int BYTES_MASK = 1 << 1, LATIN1_MASK = 1 << 2, UTF8_MASK = 1 << 3,
              ASCII_MASK = 1 << 6;
constexpr int kMaxDepth = 256;

std::string readWholeFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw RError("cannot open " + path + ": " + std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (in.bad())
    throw RError("cannot read " + path + ": " + std::strerror(errno));
  return data;
}

// Latin-1 bytes map 1:1 to U+0000..U+00FF.
std::string latin1ToUtf8(const std::string &s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xc0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    }
  }
  return out;
}

class Unserializer {
public:
  Unserializer(const std::string &b, std::string what)
      : p_(reinterpret_cast<const unsigned char *>(b.data())), n_(b.size()),
        what_(std::move(what)) {}

  RPtr run() {
    if (n_ < 2 || p_[1] != '\n')
      fail("not an R serialization stream");
    if (p_[0] != 'X')
      fail(std::string("unsupported serialization format '") +
           static_cast<char>(p_[0]) + "' (only XDR 'X' is supported)");
    pos_ = 2;
    int version = readInt();
    if (version != 2 && version != 3)
      fail("unsupported serialization version " + std::to_string(version));
    readInt(); // R version that wrote it: informational
    readInt(); // minimal R version to read it: informational
    if (version == 3) {
      int32_t len = readInt();
      if (len < 0 || len > 64)
        fail("bad native-encoding length " + std::to_string(len));
      need(static_cast<size_t>(len));
      std::string enc(reinterpret_cast<const char *>(p_ + pos_),
                      static_cast<size_t>(len));
      pos_ += static_cast<size_t>(len);
      // Strings without an explicit encoding flag are in this encoding.
      nativeLatin1_ = enc == "latin1" || enc == "ISO-8859-1" ||
                      enc == "ISO8859-1" || enc == "CP1252";
    }
    RPtr root = readItem(0);
    if (pos_ != n_)
      fail(std::to_string(n_ - pos_) + " trailing bytes after the object");
    return root;
  }

private:
  [[noreturn]] void fail(const std::string &msg) const {
    throw RError(what_ + ": " + msg + " (at byte " + std::to_string(pos_) + ")");
  }
  void need(size_t k) const {
    if (k > n_ - pos_)
      fail("truncated data: need " + std::to_string(k) + " bytes, have " +
           std::to_string(n_ - pos_));
  }
  int32_t readInt() {
    need(4);
    uint32_t v = (uint32_t(p_[pos_]) << 24) | (uint32_t(p_[pos_ + 1]) << 16) |
                 (uint32_t(p_[pos_ + 2]) << 8) | uint32_t(p_[pos_ + 3]);
    pos_ += 4;
    return static_cast<int32_t>(v);
  }
  double readReal() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v = (v << 8) | p_[pos_ + i];
    pos_ += 8;
    double d;
    std::memcpy(&d, &v, sizeof d);
    return d;
  }
  // Vector length: an int, or -1 followed by two ints for lengths >= 2^31.
  // `elemBytes` is the minimum encoded size of one element, used to reject
  // lengths the remaining buffer cannot possibly hold.
  size_t readLength(size_t elemBytes) {
    int32_t len = readInt();
    uint64_t L;
    if (len >= 0) {
      L = static_cast<uint64_t>(len);
    } else if (len == -1) {
      uint64_t hi = static_cast<uint32_t>(readInt());
      uint64_t lo = static_cast<uint32_t>(readInt());
      L = (hi << 32) | lo;
    } else {
      fail("negative vector length " + std::to_string(len));
    }
    if (elemBytes && L > (n_ - pos_) / elemBytes)
      fail("vector length " + std::to_string(L) + " exceeds the data left");
    return static_cast<size_t>(L);
  }

  RPtr readItem(int depth) { return readItemWithFlags(readInt(), depth); }

  RPtr readItemWithFlags(int32_t flags, int depth) {
    if (depth > kMaxDepth)
      fail("objects nested deeper than " + std::to_string(kMaxDepth));
    const int type = flags & 0xff;
    const int levels = static_cast<int>(static_cast<uint32_t>(flags) >> 12);
    const bool hasAttr = flags & (1 << 9), hasTag = flags & (1 << 10);
    auto obj = std::make_shared<RObject>();
    obj->type = type;
    switch (type) {
    case NILVALUE_SXP:
      obj->type = NILSXP;
      return obj;
    case REFSXP: {
      // Back-reference to an earlier symbol/environment; index is packed in
      // the high bits of flags, or follows when it does not fit (0).
      int64_t idx = static_cast<uint32_t>(flags) >> 8;
      if (idx == 0)
        idx = readInt();
      if (idx < 1 || static_cast<size_t>(idx) > refs_.size())
        fail("reference " + std::to_string(idx) + " out of range");
      return refs_[static_cast<size_t>(idx - 1)];
    }
    case SYMSXP: {
      RPtr name = readItem(depth + 1);
      if (name->type != CHARSXP || !name->text)
        fail("symbol name is not a string");
      obj->text = name->text;
      refs_.push_back(obj); // symbols enter the reference table when read
      return obj;
    }
    case LISTSXP:
      return readPairlist(flags, depth);
    case CHARSXP: {
      int32_t len = readInt();
      if (len == -1)
        return obj; // NA_character_
      if (len < 0)
        fail("negative string length");
      need(static_cast<size_t>(len));
      std::string s(reinterpret_cast<const char *>(p_ + pos_),
                    static_cast<size_t>(len));
      pos_ += static_cast<size_t>(len);
      // UTF-8 and ASCII strings are kept as is; Latin-1 is converted. A
      // string with no flag is in the writer's native encoding (UTF-8 for
      // the janeaustenr build; version 2 streams do not say, assume UTF-8).
      const bool flagged = levels & (BYTES_MASK | UTF8_MASK | ASCII_MASK);
      const bool latin1 = (levels & LATIN1_MASK) || (!flagged && nativeLatin1_);
      obj->text = latin1 ? latin1ToUtf8(s) : std::move(s);
      return obj;
    }
    case LGLSXP:
    case INTSXP: {
      size_t len = readLength(4);
      obj->ints.resize(len);
      for (auto &v : obj->ints)
        v = readInt();
      break;
    }
    case REALSXP: {
      size_t len = readLength(8);
      obj->reals.resize(len);
      for (auto &v : obj->reals)
        v = readReal();
      break;
    }
    case STRSXP: {
      size_t len = readLength(8);
      obj->strings.reserve(len);
      for (size_t i = 0; i < len; ++i) {
        RPtr s = readItem(depth + 1);
        if (s->type != CHARSXP)
          fail("character vector element is " + sexpName(s->type));
        obj->strings.push_back(s->text);
      }
      break;
    }
    case VECSXP:
    case EXPRSXP: {
      size_t len = readLength(4);
      obj->items.reserve(len);
      for (size_t i = 0; i < len; ++i)
        obj->items.push_back(readItem(depth + 1));
      break;
    }
    case GLOBALENV_SXP: case EMPTYENV_SXP: case BASEENV_SXP:
    case BASENAMESPACE_SXP: case NAMESPACESXP: case PACKAGESXP:
    case PERSISTSXP: case UNBOUNDVALUE_SXP: case MISSINGARG_SXP:
    case ALTREP_SXP:
    default:
      fail("unsupported R object: " + sexpName(type));
    }
    if (hasTag)
      fail("unexpected tag (on: " + sexpName(type) + ")");
    if (hasAttr)
      readAttributes(*obj, depth);
    return obj;
  }

  // A pairlist: nodes of (attributes?, tag?, CAR) whose CDR is the next node
  // or NILVALUE. Walked iteratively so long lists cost no stack.
  RPtr readPairlist(int32_t flags, int depth) {
    auto list = std::make_shared<RObject>();
    list->type = LISTSXP;
    for (;;) {
      if (flags & (1 << 9))
        readItem(depth + 1); // attributes on a pairlist node: unused
      std::string tag;
      if (flags & (1 << 10)) {
        RPtr t = readItem(depth + 1);
        if (t->type != SYMSXP)
          fail("pairlist tag is " + sexpName(t->type));
        tag = t->text.value_or("");
      }
      list->tags.push_back(std::move(tag));
      list->items.push_back(readItem(depth + 1));
      flags = readInt();
      if ((flags & 0xff) == NILVALUE_SXP)
        return list;
      if ((flags & 0xff) != LISTSXP)
        fail("pairlist does not end in NULL (got: " + sexpName(flags & 0xff) + ")");
    }
  }

  void readAttributes(RObject &obj, int depth) {
    RPtr a = readItem(depth + 1);
    if (a->type != LISTSXP)
      fail("attributes are not a pairlist (got: " + sexpName(a->type) + ")");
    for (size_t i = 0; i < a->items.size(); ++i)
      obj.attributes.emplace_back(a->tags[i], a->items[i]);
  }

  const unsigned char *p_;
  size_t n_, pos_ = 0;
  std::string what_;
  std::vector<RPtr> refs_;
  bool nativeLatin1_ = false;
};

} // namespace

std::string sexpName(int type) {
  switch (type) {
  case NILSXP: return "NULL";
  case SYMSXP: return "symbol";
  case LISTSXP: return "pairlist";
  case 3: return "closure";
  case 4: return "environment";
  case 6: return "language object";
  case CHARSXP: return "CHARSXP";
  case LGLSXP: return "logical vector";
  case INTSXP: return "integer vector";
  case REALSXP: return "double vector";
  case 15: return "complex vector";
  case STRSXP: return "character vector";
  case VECSXP: return "list";
  case EXPRSXP: return "expression vector";
  case 24: return "raw vector";
  case 25: return "S4 object";
  case REFSXP: return "reference";
  case GLOBALENV_SXP: case EMPTYENV_SXP: case BASEENV_SXP:
  case BASENAMESPACE_SXP: case NAMESPACESXP: case PACKAGESXP:
    return "environment";
  case PERSISTSXP: return "persistent reference";
  case ALTREP_SXP: return "ALTREP object";
  default: return "type " + std::to_string(type);
  }
}

const RObject *RObject::attr(const std::string &name) const {
  for (const auto &[k, v] : attributes)
    if (k == name)
      return v.get();
  return nullptr;
}

std::vector<std::string> RObject::names() const {
  std::vector<std::string> out;
  if (const RObject *n = attr("names"); n && n->type == STRSXP)
    for (const auto &s : n->strings)
      out.push_back(s.value_or(""));
  return out;
}

const RObject *RObject::get(const std::string &name) const {
  if (type != VECSXP)
    return nullptr;
  auto ns = names();
  for (size_t i = 0; i < ns.size() && i < items.size(); ++i)
    if (ns[i] == name)
      return items[i].get();
  return nullptr;
}

size_t RObject::length() const {
  switch (type) {
  case LGLSXP: case INTSXP: return ints.size();
  case REALSXP: return reals.size();
  case STRSXP: return strings.size();
  case VECSXP: case EXPRSXP: case LISTSXP: return items.size();
  default: return type == NILSXP ? 0 : 1;
  }
}

RPtr unserialize(const std::string &bytes, const std::string &what) {
  return Unserializer(bytes, what).run();
}

std::string inflate(const char *data, size_t size, size_t expected,
                    const std::string &what) {
  // A hard cap keeps a corrupt stream ("zip bomb") from eating memory; the
  // janeaustenr objects are ~1 MB each.
  constexpr size_t kMaxOut = size_t(1) << 30;
  z_stream zs{};
  // 15 + 32: accept both zlib and gzip headers (rdx is gzip, rdb is zlib).
  if (inflateInit2(&zs, 15 + 32) != Z_OK)
    throw RError(what + ": zlib initialisation failed");
  std::string out(expected ? expected : size * 4 + 1024, '\0');
  zs.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(data));
  zs.avail_in = static_cast<uInt>(size);
  int rc = Z_OK;
  size_t produced = 0;
  while (rc != Z_STREAM_END) {
    if (produced == out.size()) {
      if (expected || out.size() >= kMaxOut) {
        inflateEnd(&zs);
        throw RError(what + ": decompressed data larger than " +
                     (expected ? "declared (" + std::to_string(expected) +
                                     " bytes)"
                               : std::string("1 GiB")));
      }
      out.resize(std::min(out.size() * 2, kMaxOut));
    }
    zs.next_out = reinterpret_cast<Bytef *>(&out[produced]);
    zs.avail_out = static_cast<uInt>(out.size() - produced);
    rc = ::inflate(&zs, Z_NO_FLUSH);
    produced = out.size() - zs.avail_out;
    if (rc != Z_OK && rc != Z_STREAM_END) {
      std::string msg = zs.msg ? zs.msg : "error " + std::to_string(rc);
      if (rc == Z_BUF_ERROR)
        msg = "truncated compressed stream";
      inflateEnd(&zs);
      throw RError(what + ": decompression failed: " + msg);
    }
  }
  inflateEnd(&zs);
  out.resize(produced);
  if (expected && produced != expected)
    throw RError(what + ": decompressed to " + std::to_string(produced) +
                 " bytes, declared " + std::to_string(expected));
  return out;
}

LazyLoadDB LazyLoadDB::open(const std::string &base) {
  LazyLoadDB db;
  db.base_ = base;
  const std::string rdxPath = base + ".rdx";
  std::string rdx = readWholeFile(rdxPath);
  // saveRDS() gzips by default; accept an uncompressed index too.
  if (rdx.size() >= 2 && static_cast<unsigned char>(rdx[0]) == 0x1f &&
      static_cast<unsigned char>(rdx[1]) == 0x8b)
    rdx = inflate(rdx.data(), rdx.size(), 0, rdxPath);
  RPtr index = unserialize(rdx, rdxPath);
  if (index->type != VECSXP)
    throw RError(rdxPath + ": index is not a list (got: " +
                 sexpName(index->type) + ")");
  const RObject *vars = index->get("variables");
  if (!vars || vars->type != VECSXP)
    throw RError(rdxPath + ": index has no 'variables' list");
  const RObject *refs = index->get("references");
  if (refs && refs->length() != 0)
    throw RError(rdxPath + ": environments ('references') are not supported");
  if (const RObject *c = index->get("compressed")) {
    if ((c->type == LGLSXP || c->type == INTSXP) && c->ints.size() == 1)
      db.compression_ = c->ints[0];
    else if (c->type == REALSXP && c->reals.size() == 1)
      db.compression_ = static_cast<int>(c->reals[0]);
    else
      throw RError(rdxPath + ": 'compressed' is not a scalar");
    if (db.compression_ < 0 || db.compression_ > 3)
      throw RError(rdxPath + ": unknown compression " +
                   std::to_string(db.compression_));
  }
  db.names_ = vars->names();
  if (db.names_.size() != vars->items.size())
    throw RError(rdxPath + ": 'variables' is not a named list");
  for (size_t i = 0; i < vars->items.size(); ++i) {
    const RObject &e = *vars->items[i];
    double off, len;
    if (e.type == INTSXP && e.ints.size() == 2) {
      off = e.ints[0];
      len = e.ints[1];
    } else if (e.type == REALSXP && e.reals.size() == 2) {
      off = e.reals[0]; // databases over 2 GB store doubles
      len = e.reals[1];
    } else {
      throw RError(rdxPath + ": entry '" + db.names_[i] +
                   "' is not an (offset, length) pair");
    }
    if (!(off >= 0 && len >= 0 && off < 9e15 && len < 9e15))
      throw RError(rdxPath + ": entry '" + db.names_[i] + "' has a bad span");
    db.spans_.emplace_back(static_cast<uint64_t>(off),
                           static_cast<uint64_t>(len));
  }
  db.rdb_ = readWholeFile(base + ".rdb");
  return db;
}

bool LazyLoadDB::has(const std::string &name) const {
  for (const auto &n : names_)
    if (n == name)
      return true;
  return false;
}

RPtr LazyLoadDB::load(const std::string &name) const {
  const std::string rdbPath = base_ + ".rdb";
  size_t i = 0;
  while (i < names_.size() && names_[i] != name)
    ++i;
  if (i == names_.size())
    throw RError(base_ + ".rdx: no variable '" + name + "'");
  const std::string what = rdbPath + " ('" + name + "')";
  auto [off, len] = spans_[i];
  if (off > rdb_.size() || len > rdb_.size() - off)
    throw RError(what + ": entry [" + std::to_string(off) + ", +" +
                 std::to_string(len) + ") lies past the end of the file (" +
                 std::to_string(rdb_.size()) + " bytes)");
  const auto *p = reinterpret_cast<const unsigned char *>(rdb_.data() + off);
  std::string raw;
  if (compression_ == 0) {
    raw.assign(rdb_, off, len);
  } else {
    if (len < 5)
      throw RError(what + ": entry too short (" + std::to_string(len) + ")");
    // 4-byte big-endian size of the serialized object.
    const size_t outLen = (size_t(p[0]) << 24) | (size_t(p[1]) << 16) |
                          (size_t(p[2]) << 8) | size_t(p[3]);
    const char *body = reinterpret_cast<const char *>(p + 4);
    size_t bodyLen = len - 4;
    char kind = '1'; // compression 1: plain zlib, no type byte
    if (compression_ >= 2) {
      kind = static_cast<char>(*body); // 2/3 store a type byte first
      ++body;
      --bodyLen;
    }
    if (kind == '0') {
      if (bodyLen != outLen)
        throw RError(what + ": stored entry size mismatch");
      raw.assign(body, bodyLen);
    } else if (kind == '1') {
      raw = inflate(body, bodyLen, outLen, what);
    } else {
      throw RError(what + ": unsupported compression type '" +
                   std::string(1, kind) + "' (only zlib is supported)");
    }
  }
  return unserialize(raw, what);
}

} // namespace mega::rdata
