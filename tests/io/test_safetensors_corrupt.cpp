// Corrupted safetensors files: each one a single, named change to a valid image, which the reader
// must reject with an ssmkit::Error naming the file (and the tensor, when there is one) -- from
// memory and from a mapped file, and without reading out of bounds (these also run under ASan).
#include "io_test_util.hpp"
#include "testing.hpp"

#include <ssmkit/io/safetensors.hpp>

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace ssmkit {
namespace {

using io::SafetensorsFile;
using testing::safetensors_image;
using testing::TempDir;

// The valid image every case starts from: F32 (2, 3) at [0, 24), I16 (4) at [24, 32).
const std::string kA = R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";
const std::string kB = R"({"dtype":"I16","shape":[4],"data_offsets":[24,32]})";
constexpr std::size_t kData = 32;

std::string header(const std::string& a, const std::string& b = kB) {
  return R"({"__metadata__":{"format":"pt"},"a":)" + a + R"(,"b":)" + b + "}";
}

std::vector<std::uint8_t> valid_image() {
  return safetensors_image(header(kA), kData);
}

struct Corruption {
  std::string kind;
  std::vector<std::uint8_t> bytes;
  std::vector<std::string> needles;  ///< the message must contain each
};

std::string nested(int depth) {
  return std::string(static_cast<std::size_t>(depth), '[') +
         std::string(static_cast<std::size_t>(depth), ']');
}

std::vector<Corruption> corruptions() {
  const auto valid = valid_image();
  const auto cut = [&](std::size_t n) {
    return std::vector<std::uint8_t>(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(n));
  };
  const std::string h = header(kA);
  const auto entry = [](const std::string& dtype, const std::string& shape,
                        const std::string& offsets) {
    return R"({"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
  };
  return {
      {"empty_file", {}, {"file size", ">= 8"}},
      {"shorter_than_the_length_field", cut(5), {"file size"}},
      {"huge_header_length",
       safetensors_image(h, kData, 1ull << 62),
       {"header length", "<= 100000000"}},
      {"header_length_past_the_end",
       safetensors_image(h, kData, h.size() + kData + 1),
       {"header length"}},
      {"truncated_in_the_header", cut(8 + h.size() / 2), {"header length"}},
      {"truncated_in_the_data", cut(valid.size() - 3), {"'b'", "data_offsets end", "<= 29"}},
      {"zero_header_length", safetensors_image("", 8), {"header", "empty"}},
      {"header_not_json", safetensors_image("{not json}", kData), {"valid JSON"}},
      {"header_json_array", safetensors_image("[1,2,3]", kData), {"starting with '{'"}},
      {"header_leading_space", safetensors_image(" " + h, kData), {"starting with '{'"}},
      {"header_trailing_garbage", safetensors_image(h + "}", kData), {"valid JSON"}},
      {"header_two_objects", safetensors_image(h + h, kData), {"valid JSON"}},
      {"entry_not_an_object", safetensors_image(header("5"), kData), {"'a'", "an object"}},
      {"offsets_past_the_end",
       safetensors_image(header(kA, entry("\"I16\"", "[8]", "[24,40]")), kData),
       {"'b'", "data_offsets end", "<= 32"}},
      {"begin_after_end",
       safetensors_image(header(entry("\"F32\"", "[0]", "[24,0]")), kData),
       {"'a'", "begin <= end"}},
      {"overlapping_ranges",
       safetensors_image(header(kA, entry("\"I16\"", "[4]", "[16,24]")), kData),
       {"data_offsets", "the end of"}},
      {"shape_size_mismatch",
       safetensors_image(header(entry("\"F32\"", "[2,4]", "[0,24]")), kData),
       {"'a'", "byte range", "32 bytes"}},
      {"dtype_size_mismatch",
       safetensors_image(header(entry("\"F64\"", "[2,3]", "[0,24]")), kData),
       {"'a'", "byte range", "48 bytes"}},
      {"unknown_dtype_f8",
       safetensors_image(header(entry("\"F8_E4M3\"", "[2,3]", "[0,24]")), kData),
       {"'a'", "dtype", "F8_E4M3"}},
      {"unknown_dtype_lowercase",
       safetensors_image(header(entry("\"f32\"", "[2,3]", "[0,24]")), kData),
       {"'a'", "dtype"}},
      {"dtype_not_a_string",
       safetensors_image(header(entry("4", "[2,3]", "[0,24]")), kData),
       {"'a'", "dtype", "a string"}},
      {"negative_shape",
       safetensors_image(header(entry("\"F32\"", "[-2,-3]", "[0,24]")), kData),
       {"'a'", "shape[0]", "non-negative integer", "-2"}},
      {"element_count_overflow",
       safetensors_image(header(entry("\"F32\"", "[4294967296,4294967296,4]", "[0,24]")), kData),
       {"'a'", "element count"}},
      {"byte_size_overflow",
       safetensors_image(header(entry("\"F32\"", "[2305843009213693952]", "[0,24]")), kData),
       {"'a'", "byte size"}},
      {"shape_beyond_uint64",
       safetensors_image(header(entry("\"F32\"", "[18446744073709551616]", "[0,24]")), kData),
       {"'a'", "shape[0]", "non-negative integer"}},
      {"shape_beyond_int64",
       safetensors_image(header(entry("\"F32\"", "[9223372036854775808]", "[0,24]")), kData),
       {"'a'", "shape[0]", "<= 2^63 - 1"}},
      {"fractional_shape",
       safetensors_image(header(entry("\"F32\"", "[2.0,3]", "[0,24]")), kData),
       {"'a'", "shape[0]"}},
      {"boolean_in_shape",
       safetensors_image(header(entry("\"F32\"", "[true,3]", "[0,24]")), kData),
       {"'a'", "shape[0]"}},
      {"shape_not_an_array",
       safetensors_image(header(entry("\"F32\"", "\"2,3\"", "[0,24]")), kData),
       {"'a'", "shape", "an array"}},
      {"duplicate_tensor_names",
       safetensors_image(R"({"a":)" + kA + R"(,"b":)" + kB + R"(,"a":)" + kA + "}", kData),
       {"unique", "'a' twice"}},
      {"duplicate_field_in_entry",
       safetensors_image(
           header(R"({"dtype":"F32","dtype":"F64","shape":[2,3],"data_offsets":[0,24]})"), kData),
       {"unique", "'dtype' twice"}},
      {"non_utf8_name", safetensors_image("{\"a\xff\":" + kA + "}", kData), {"valid JSON"}},
      {"lone_surrogate_name",
       safetensors_image(R"({"a\udc80":)" + kA + "}", kData),
       {"valid JSON"}},
      {"missing_data_offsets",
       safetensors_image(header(R"({"dtype":"F32","shape":[2,3]})"), kData),
       {"'a'", "data_offsets", "missing"}},
      {"missing_dtype",
       safetensors_image(header(R"({"shape":[2,3],"data_offsets":[0,24]})"), kData),
       {"'a'", "dtype", "missing"}},
      {"missing_shape",
       safetensors_image(header(R"({"dtype":"F32","data_offsets":[0,24]})"), kData),
       {"'a'", "shape", "missing"}},
      {"data_offsets_three_numbers",
       safetensors_image(header(entry("\"F32\"", "[2,3]", "[0,24,32]")), kData),
       {"'a'", "[begin, end]"}},
      {"data_offsets_string",
       safetensors_image(header(entry("\"F32\"", "[2,3]", "[0,\"24\"]")), kData),
       {"'a'", "data_offsets[1]"}},
      {"data_offsets_negative",
       safetensors_image(header(entry("\"F32\"", "[0]", "[-8,-8]")), kData),
       {"'a'", "data_offsets[0]"}},
      {"data_offsets_object",
       safetensors_image(header(entry("\"F32\"", "[2,3]", "{\"0\":24}")), kData),
       {"'a'", "[begin, end]"}},
      {"unknown_field",
       safetensors_image(header(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24],"x":1})"),
                         kData),
       {"'a'", "field", "'x'"}},
      {"metadata_value_not_a_string",
       safetensors_image(R"({"__metadata__":{"format":1},"a":)" + kA + "}", kData),
       {"__metadata__['format']", "string"}},
      {"metadata_not_an_object",
       safetensors_image(R"({"__metadata__":["pt"],"a":)" + kA + "}", kData),
       {"__metadata__", "an object of strings"}},
      {"deep_nesting",
       safetensors_image(R"({"__metadata__":)" + nested(100000) + "}", kData),
       {"nesting depth"}},
  };
}

void PrintTo(const Corruption& c, std::ostream* os) {
  *os << c.kind;
}

class Corrupt : public ::testing::TestWithParam<Corruption> {};

TEST(CorruptBase, TheValidImageOpens) {
  const auto f = SafetensorsFile::from_bytes(valid_image(), "base");
  EXPECT_EQ(f.info("a").shape, (std::vector<Index>{2, 3}));
  EXPECT_EQ(f.info("b").begin, 24u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST_P(Corrupt, FromMemory) {
  SSMKIT_EXPECT_ERROR(SafetensorsFile::from_bytes(GetParam().bytes, "img.safetensors"),
                      "img.safetensors");
  for (const auto& needle : GetParam().needles)
    SSMKIT_EXPECT_ERROR(SafetensorsFile::from_bytes(GetParam().bytes, "img"), needle);
}

TEST_P(Corrupt, FromMappedFile) {
  TempDir dir;
  const std::string path = dir.file(GetParam().kind + ".safetensors");
  testing::write_bytes(path, GetParam().bytes);
  SSMKIT_EXPECT_ERROR(SafetensorsFile::open(path), path);
}

INSTANTIATE_TEST_SUITE_P(Kinds, Corrupt, ::testing::ValuesIn(corruptions()),
                         [](const auto& info) { return info.param.kind; });

TEST(Corrupt, MissingFileAndDirectory) {
  TempDir dir;
  SSMKIT_EXPECT_ERROR(SafetensorsFile::open(dir.file("absent.safetensors")), "absent.safetensors",
                      "readable");
  SSMKIT_EXPECT_ERROR(SafetensorsFile::open(dir.path().string()), "a regular file",
                      "got a directory");
  SSMKIT_EXPECT_ERROR(io::read_json_file(dir.path().string()), "a regular file", "got a directory");
}

// Opening a FIFO for reading waits for a writer: both readers must refuse it without blocking.
TEST(Corrupt, Fifo) {
  TempDir dir;
  const std::string fifo = dir.file("fifo.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  SSMKIT_EXPECT_ERROR(SafetensorsFile::open(fifo), fifo, "a regular file", "got a FIFO");
  SSMKIT_EXPECT_ERROR(io::read_json_file(fifo), fifo, "a regular file", "got a FIFO");
}

// Valid headers whose bytes are wrong for the type asked: reported when read, not at open.
TEST(Corrupt, BoolBytesOtherThanZeroOrOne) {
  const std::string h = R"({"m":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}})";
  auto img = safetensors_image(h, 4);
  const std::uint8_t bytes[4] = {1, 0, 2, 1};
  std::memcpy(img.data() + img.size() - 4, bytes, 4);
  const auto f = SafetensorsFile::from_bytes(img, "bool");
  SSMKIT_EXPECT_ERROR((f.view<bool, 1>("m")), "'m'", "BOOL byte", "got 2");
  SSMKIT_EXPECT_ERROR((f.read_as<std::uint8_t, 1>("m")), "'m'", "element 2");
}

}  // namespace
}  // namespace ssmkit
