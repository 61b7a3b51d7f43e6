// safetensors reader and writer: round trips of every dtype and rank, strided input, metadata, the
// file layout, dtype conversion, and a file written by the Python `safetensors` package.
#include "io_test_util.hpp"
#include "testing.hpp"

#include <ssmkit/io/safetensors.hpp>

#include <cmath>
#include <filesystem>
#include <iterator>
#include <limits>
#include <random>

namespace ssmkit {
namespace {

using io::SafetensorsFile;
using io::SafetensorsWriter;
using testing::TempDir;

/// `n` fresh random values of T: wide integers, floats of both signs and varied magnitude.
/// (A HostTensor rather than std::vector, whose bool specialisation has no data().)
template <class T>
HostTensor<T, 1> random_values(Index n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostTensor<T, 1> v({n});
  for (Index i = 0; i < n; ++i) {
    T& x = v(i);
    if constexpr (std::is_same_v<T, bool>) {
      x = (rng() & 1) != 0;
    } else if constexpr (std::is_integral_v<T>) {
      x = static_cast<T>(rng());  // every bit pattern of T
    } else {
      std::normal_distribution<double> dist(0.0, 10.0);
      x = static_cast<T>(dist(rng));
    }
  }
  return v;
}

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class T>
class RoundTrip : public ::testing::Test {};
using StorageTypes = ::testing::Types<double, float, Eigen::half, Eigen::bfloat16, std::int64_t,
                                      std::int32_t, std::int16_t, std::int8_t, std::uint8_t, bool>;
TYPED_TEST_SUITE(RoundTrip, StorageTypes);

TYPED_TEST(RoundTrip, EveryRankIsBitExactThroughViewAndReadAs) {
  using T = TypeParam;
  TempDir dir;
  const auto v1 = random_values<T>(7, 1);
  const auto v2 = random_values<T>(3 * 5, 2);
  const auto v3 = random_values<T>(2 * 3 * 4, 3);
  const auto v4 = random_values<T>(2 * 1 * 3 * 2, 4);
  SafetensorsWriter w;
  w.add("r1", TensorView<const T, 1>(v1.data(), {7}));
  w.add("r2", TensorView<const T, 2>(v2.data(), {3, 5}));
  w.add("r3", TensorView<const T, 3>(v3.data(), {2, 3, 4}));
  w.add("r4", TensorView<const T, 4>(v4.data(), {2, 1, 3, 2}));
  w.add("zero", TensorView<const T, 2>(v1.data(), {0, 5}));
  const std::string path = dir.file("t.safetensors");
  w.write(path);

  const auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.info("r3").dtype, dtype_of<T>);
  EXPECT_EQ(f.info("r3").shape, (std::vector<Index>{2, 3, 4}));
  EXPECT_EQ(f.info("zero").shape, (std::vector<Index>{0, 5}));
  EXPECT_EQ(f.bytes("r2").size, static_cast<std::size_t>(v2.numel()) * sizeof(T));

  const auto check = [&](const auto& view, const HostTensor<T, 1>& ref) {
    ASSERT_EQ(view.numel(), ref.numel());
    for (Index i = 0; i < ref.numel(); ++i)
      ASSERT_TRUE(same_bits(view.data()[i], ref.data()[i])) << "element " << i;
  };
  check(f.template view<T, 1>("r1"), v1);
  check(f.template view<T, 2>("r2"), v2);
  check(f.template view<T, 3>("r3"), v3);
  check(f.template view<T, 4>("r4"), v4);
  EXPECT_EQ((f.template view<T, 2>("zero").numel()), 0);
  const auto copy = f.template read_as<T, 3>("r3");
  EXPECT_EQ(copy.shape(), (Shape<3>{2, 3, 4}));
  check(copy.view(), v3);
}

TEST(Safetensors, StridedViewsAreWrittenContiguousRowMajor) {
  TempDir dir;
  const auto src = random_values<float>(4 * 6 * 5, 11);
  const TensorView<const float, 3> full(src.data(), {4, 6, 5});
  // Every other row of dim 1, transposed last two dims: strides (30, 1, 10).
  const TensorView<const float, 3> strided(src.data(), {4, 5, 3}, {30, 1, 10});
  const auto t = TensorView<const float, 2>(src.data(), {6, 5}).transposed(0, 1);
  SafetensorsWriter w;
  w.add("strided", strided);
  w.add("transposed", t);
  w.write(dir.file("s.safetensors"));
  const auto f = SafetensorsFile::open(dir.file("s.safetensors"));
  const auto a = f.view<float, 3>("strided");
  ASSERT_EQ(a.shape(), (Shape<3>{4, 5, 3}));
  for (Index i = 0; i < 4; ++i)
    for (Index j = 0; j < 5; ++j)
      for (Index k = 0; k < 3; ++k)
        ASSERT_EQ(a.data()[(i * 5 + j) * 3 + k], full(i, 2 * k, j));
  const auto b = f.view<float, 2>("transposed");
  ASSERT_EQ(b.shape(), (Shape<2>{5, 6}));
  for (Index i = 0; i < 5; ++i)
    for (Index j = 0; j < 6; ++j)
      ASSERT_EQ(b.data()[i * 6 + j], src(j * 5 + i));
}

TEST(Safetensors, MetadataRoundTrips) {
  TempDir dir;
  const auto v = random_values<float>(3, 5);
  SafetensorsWriter w;
  w.add("x", TensorView<const float, 1>(v.data(), {3}));
  w.set_metadata("format", "pt");
  w.set_metadata("note", "Δt \"quoted\"\n");
  w.write(dir.file("m.safetensors"));
  const auto f = SafetensorsFile::open(dir.file("m.safetensors"));
  EXPECT_EQ(f.metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"note", "Δt \"quoted\"\n"}}));
  EXPECT_TRUE(f.contains("x"));
  EXPECT_FALSE(f.contains("__metadata__"));
}

// The layout of the reference writer: header padded with spaces to 8 bytes, tensors by decreasing
// element size then name, back to back, so every one is aligned for its type.
TEST(Safetensors, WriterLayoutMatchesTheReferenceImplementation) {
  TempDir dir;
  const auto i8 = random_values<std::int8_t>(3, 1);
  const auto f64 = random_values<double>(5, 2);
  const auto f16 = random_values<Eigen::half>(3, 3);
  const auto f32a = random_values<float>(1, 4);
  const auto f32b = random_values<float>(2, 5);
  SafetensorsWriter w;
  w.add("i8", TensorView<const std::int8_t, 1>(i8.data(), {3}));
  w.add("f16", TensorView<const Eigen::half, 1>(f16.data(), {3}));
  w.add("f32b", TensorView<const float, 1>(f32b.data(), {2}));
  w.add("f64", TensorView<const double, 1>(f64.data(), {5}));
  w.add("f32a", TensorView<const float, 1>(f32a.data(), {1}));
  const auto bytes = w.serialize();
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 5 * 8 + 3 * 4 + 3 * 2 + 3);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  const auto j = io::parse_json(header, "header");
  EXPECT_EQ(header.find_last_not_of(' ') + 1, j.dump().size());  // only spaces pad it
  const std::vector<std::pair<std::string, std::uint64_t>> order = {
      {"f64", 0}, {"f32a", 40}, {"f32b", 44}, {"f16", 52}, {"i8", 58}};
  for (const auto& [name, begin] : order)
    EXPECT_EQ(j[name]["data_offsets"][0].get<std::uint64_t>(), begin) << name;

  const auto f = SafetensorsFile::from_bytes(bytes, "layout");
  for (Index i = 0; i < f64.numel(); ++i)
    EXPECT_EQ((f.view<double, 1>("f64")(i)), f64(i));  // aligned zero-copy
}

TEST(Safetensors, ReadAsConvertsBetweenFloatingTypes) {
  const auto d = random_values<double>(50, 21);
  const auto h = random_values<Eigen::half>(50, 22);
  const auto b = random_values<Eigen::bfloat16>(50, 23);
  SafetensorsWriter w;
  w.add("d", TensorView<const double, 1>(d.data(), {50}));
  w.add("h", TensorView<const Eigen::half, 1>(h.data(), {50}));
  w.add("b", TensorView<const Eigen::bfloat16, 1>(b.data(), {50}));
  const auto f = SafetensorsFile::from_bytes(w.serialize());
  const auto d_as_f = f.read_as<float, 1>("d");
  const auto d_as_bf = f.read_as<Eigen::bfloat16, 1>("d");
  const auto h_as_d = f.read_as<double, 1>("h");
  const auto h_as_bf = f.read_as<Eigen::bfloat16, 1>("h");
  const auto b_as_f = f.read_as<float, 1>("b");
  const auto b_as_h = f.read_as<Eigen::half, 1>("b");
  for (Index i = 0; i < 50; ++i) {
    EXPECT_EQ(d_as_f(i), static_cast<float>(d(i)));  // round to nearest, once
    EXPECT_LE(std::abs(static_cast<double>(d_as_bf(i)) - d(i)), std::abs(d(i)) * 0x1p-8);
    EXPECT_EQ(h_as_d(i), static_cast<double>(static_cast<float>(h(i))));  // exact
    EXPECT_TRUE(same_bits(h_as_bf(i), Eigen::bfloat16(static_cast<float>(h(i)))));
    EXPECT_EQ(b_as_f(i), static_cast<float>(b(i)));
    EXPECT_TRUE(same_bits(b_as_h(i), Eigen::half(static_cast<float>(b(i)))));
  }
}

TEST(Safetensors, ReadAsConvertsIntegersWithRangeChecks) {
  auto small = random_values<std::int64_t>(20, 31);
  for (Index i = 0; i < 20; ++i)
    small(i) %= 30000;
  const auto wide = random_values<std::int64_t>(20, 32);
  const std::vector<bool> flags = {true, false, true, true};
  std::vector<std::uint8_t> flag_bytes(flags.begin(), flags.end());
  SafetensorsWriter w;
  w.add("small", TensorView<const std::int64_t, 1>(small.data(), {20}));
  w.add("wide", TensorView<const std::int64_t, 1>(wide.data(), {20}));
  w.add("u8", TensorView<const std::uint8_t, 1>(flag_bytes.data(), {4}));
  const auto f = SafetensorsFile::from_bytes(w.serialize(), "ints");
  const auto as16 = f.read_as<std::int16_t, 1>("small");
  for (Index i = 0; i < 20; ++i)
    EXPECT_EQ(as16(i), small(i));
  const auto as_bool = f.read_as<bool, 1>("u8");
  for (Index i = 0; i < 4; ++i)
    EXPECT_EQ(as_bool(i), flags[static_cast<std::size_t>(i)]);
  SSMKIT_EXPECT_ERROR((f.read_as<std::int32_t, 1>("wide")), "ints", "'wide'",
                      "element 0 = " + std::to_string(wide(0)), "I64 to I32");
  SSMKIT_EXPECT_ERROR((f.read_as<float, 1>("small")), "'small'", "to read as F32", "got I64");
  SSMKIT_EXPECT_ERROR((f.read_as<std::int32_t, 1>("nope")), "'nope'", "missing");
}

// A finite value past the target's range is refused, as integer narrowing is, instead of
// becoming inf; values already infinite or NaN are kept.
TEST(Safetensors, ReadAsRefusesFloatsThatOverflowTheTarget) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const double special[4] = {nan, inf, -inf, 7e4};
  const double huge[2] = {1.0, -1e300};
  const float f32[2] = {65504.0f, 1e5f};
  SafetensorsWriter w;
  w.add("special", TensorView<const double, 1>(special, {4}));
  w.add("huge", TensorView<const double, 1>(huge, {2}));
  w.add("f32", TensorView<const float, 1>(f32, {2}));
  w.add("f32_first", TensorView<const float, 1>(f32, {1}));
  const auto f = SafetensorsFile::from_bytes(w.serialize(), "floats");
  const auto as_f = f.read_as<float, 1>("special");
  EXPECT_TRUE(std::isnan(as_f(0)));
  EXPECT_EQ(as_f(1), std::numeric_limits<float>::infinity());
  EXPECT_EQ(as_f(2), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(as_f(3), 7e4f);
  EXPECT_EQ(static_cast<float>(f.read_as<Eigen::half, 1>("f32_first")(0)), 65504.0f);  // max
  SSMKIT_EXPECT_ERROR((f.read_as<Eigen::half, 1>("special")), "floats", "'special'",
                      "element 3 = 70000", "F64 to F16");
  SSMKIT_EXPECT_ERROR((f.read_as<float, 1>("huge")), "'huge'", "element 1 = -1e+300", "F64 to F32");
  SSMKIT_EXPECT_ERROR((f.read_as<Eigen::bfloat16, 1>("huge")), "'huge'", "F64 to BF16");
  SSMKIT_EXPECT_ERROR((f.read_as<Eigen::half, 1>("f32")), "'f32'", "element 1 = 100000",
                      "F32 to F16");
}

// The dtype's kind is judged before any element: an empty tensor of the wrong kind is refused as
// one with elements is.
TEST(Safetensors, ReadAsRefusesTheOtherKindEvenWhenEmpty) {
  const float x[1] = {1.0f};
  const std::int32_t k[1] = {3};
  SafetensorsWriter w;
  w.add("f32_empty", TensorView<const float, 2>(x, {0, 3}));
  w.add("f32_one", TensorView<const float, 1>(x, {1}));
  w.add("i32_empty", TensorView<const std::int32_t, 1>(k, {0}));
  const auto f = SafetensorsFile::from_bytes(w.serialize(), "kinds");
  SSMKIT_EXPECT_ERROR((f.read_as<std::int32_t, 2>("f32_empty")), "'f32_empty'", "to read as I32",
                      "got F32");
  SSMKIT_EXPECT_ERROR((f.read_as<std::int32_t, 1>("f32_one")), "'f32_one'", "to read as I32",
                      "got F32");
  SSMKIT_EXPECT_ERROR((f.read_as<bool, 1>("f32_one")), "'f32_one'", "to read as BOOL");
  SSMKIT_EXPECT_ERROR((f.read_as<double, 1>("i32_empty")), "'i32_empty'", "to read as F64",
                      "got I32");
  EXPECT_EQ((f.read_as<double, 2>("f32_empty").numel()), 0);
  EXPECT_EQ((f.read_as<std::int64_t, 1>("i32_empty").numel()), 0);
}

// write() puts a new file in place of the old one: a view of the old file keeps its bytes (an
// in-place rewrite showed the new ones through the mapping, or SIGBUS once the file shrank).
TEST(Safetensors, RewritingAnOpenFileLeavesItsViewsIntact) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  const auto a = random_values<float>(4096, 61);
  const auto b = random_values<float>(4096, 62);
  SafetensorsWriter wa;
  wa.add("w", TensorView<const float, 1>(a.data(), {4096}));
  wa.write(path);
  const auto old_file = SafetensorsFile::open(path);
  const auto old_view = old_file.view<float, 1>("w");

  SafetensorsWriter wb;  // same size, other values: the mapping would show them if rewritten
  wb.add("w", TensorView<const float, 1>(b.data(), {4096}));
  wb.write(path);
  for (Index i = 0; i < 4096; ++i)
    ASSERT_TRUE(same_bits(old_view(i), a(i))) << "element " << i;
  const auto new_view = SafetensorsFile::open(path).read_as<float, 1>("w");
  for (Index i = 0; i < 4096; ++i)
    ASSERT_TRUE(same_bits(new_view(i), b(i))) << "element " << i;
  // The temporary file was renamed, not left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(Safetensors, AFailedWriteLeavesNoTemporaryFile) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "sub" / "child");
  const float x[1] = {1.0f};
  SafetensorsWriter w;
  w.add("x", TensorView<const float, 1>(x, {1}));
  SSMKIT_EXPECT_ERROR(w.write(dir.file("sub")), "sub", "write");  // rename over a directory fails
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
  EXPECT_TRUE(std::filesystem::is_directory(dir.path() / "sub" / "child"));
}

// The writer refuses a header its own reader (and the reference one) would reject.
TEST(Safetensors, WriterRefusesAHeaderPastTheReadersLimit) {
  const float x[1] = {1.0f};
  SafetensorsWriter w;
  w.add("x", TensorView<const float, 1>(x, {1}));
  w.set_metadata("blob", std::string(io::kMaxSafetensorsHeader, 'x'));
  TempDir dir;
  SSMKIT_EXPECT_ERROR(w.write(dir.file("big.safetensors")), "safetensors header",
                      "<= 100000000 bytes (kMaxSafetensorsHeader)");
  EXPECT_FALSE(std::filesystem::exists(dir.file("big.safetensors")));
}

TEST(Safetensors, ViewChecksDtypeRankAndAlignment) {
  const auto v = random_values<float>(6, 41);
  SafetensorsWriter w;
  w.add("x", TensorView<const float, 2>(v.data(), {2, 3}));
  const auto f = SafetensorsFile::from_bytes(w.serialize(), "file.st");
  SSMKIT_EXPECT_ERROR((f.view<double, 2>("x")), "file.st", "'x'", "expected F64, got F32");
  SSMKIT_EXPECT_ERROR((f.view<float, 3>("x")), "'x'", "rank expected 3, got 2");
  SSMKIT_EXPECT_ERROR((f.view<float, 2>("y")), "'y'", "missing");

  // An F32 tensor 2 bytes into the data section (the format allows it; mapping it as float*
  // would be undefined): view refuses, read_as copies it.
  const std::string header = R"({"pad":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                             R"("x":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})";
  auto img = testing::safetensors_image(header + std::string((8 - header.size() % 8) % 8, ' '), 10);
  const float vals[2] = {1.25f, -3.5f};
  std::memcpy(img.data() + img.size() - 8, vals, 8);
  const auto g = SafetensorsFile::from_bytes(img, "unaligned");
  SSMKIT_EXPECT_ERROR((g.view<float, 1>("x")), "'x'", "alignment", "offset 2");
  const auto x = g.read_as<float, 1>("x");
  EXPECT_EQ(x(0), 1.25f);
  EXPECT_EQ(x(1), -3.5f);
}

TEST(Safetensors, WriterRefusesBadNamesAndDeviceViews) {
  const auto v = random_values<float>(4, 51);
  const TensorView<const float, 1> x(v.data(), {4});
  SafetensorsWriter w;
  w.add("x", x);
  SSMKIT_EXPECT_ERROR(w.add("x", x), "'x'", "unique");
  SSMKIT_EXPECT_ERROR(w.add("__metadata__", x), "reserved");
  SSMKIT_EXPECT_ERROR(w.add("bad\xff", x), "UTF-8");
  SSMKIT_EXPECT_ERROR(w.set_metadata("k", "\xc0\x80"), "UTF-8");
  // Host memory tagged CUDA: add must refuse it before reading a byte.
  const TensorView<const float, 1> on_gpu(v.data(), {4}, "g", Device::CUDA);
  SSMKIT_EXPECT_ERROR(w.add("g", on_gpu), "device");
  SSMKIT_EXPECT_ERROR(w.write("/nonexistent-dir/x.safetensors"), "nonexistent-dir", "writable");
}

// tests/data/io/all_dtypes.safetensors was written by the Python safetensors package
// (tools/make_io_goldens.py); all_dtypes.json holds the same values as JSON numbers.
template <class T, int Rank>
void expect_golden(const SafetensorsFile& f, const std::string& name, const nlohmann::json& ref) {
  SCOPED_TRACE(name);
  const auto v = f.view<T, Rank>(name);
  ASSERT_EQ(std::vector<Index>(v.shape().begin(), v.shape().end()),
            ref["shape"].get<std::vector<Index>>());
  const auto& values = ref["values"];
  ASSERT_EQ(static_cast<Index>(values.size()), v.numel());
  for (Index i = 0; i < v.numel(); ++i) {
    if constexpr (std::is_integral_v<T>)
      ASSERT_EQ(static_cast<std::int64_t>(v.data()[i]), values[i].get<std::int64_t>()) << i;
    else
      ASSERT_EQ(static_cast<double>(v.data()[i]), values[i].get<double>()) << i;
  }
  if constexpr (!std::is_integral_v<T>) {  // converting reads agree with the zero-copy ones
    const auto d = f.read_as<double, Rank>(name);
    for (Index i = 0; i < v.numel(); ++i)
      ASSERT_EQ(d.data()[i], values[i].get<double>()) << i;
  }
}

TEST(Safetensors, ReadsAFileWrittenByThePythonPackage) {
  const std::string dir = std::string(SSMKIT_TEST_DATA_DIR) + "/io/";
  const auto f = SafetensorsFile::open(dir + "all_dtypes.safetensors");
  const auto ref = io::read_json_file(dir + "all_dtypes.json");
  EXPECT_EQ(f.metadata(), (ref["metadata"].get<std::map<std::string, std::string>>()));
  ASSERT_EQ(f.tensors().size(), ref["tensors"].size());
  const auto& t = ref["tensors"];
  expect_golden<double, 2>(f, "f64", t["f64"]);
  expect_golden<float, 3>(f, "f32", t["f32"]);
  expect_golden<Eigen::half, 1>(f, "f16", t["f16"]);
  expect_golden<Eigen::bfloat16, 4>(f, "bf16", t["bf16"]);
  expect_golden<std::int64_t, 2>(f, "i64", t["i64"]);
  expect_golden<std::int32_t, 1>(f, "i32", t["i32"]);
  expect_golden<std::int16_t, 2>(f, "i16", t["i16"]);
  expect_golden<std::int8_t, 1>(f, "i8", t["i8"]);
  expect_golden<std::uint8_t, 2>(f, "u8", t["u8"]);
  expect_golden<bool, 1>(f, "bool", t["bool"]);
  expect_golden<float, 2>(f, "empty_f32", t["empty_f32"]);
  const std::map<std::string, DType> dtypes = {{"float64", DType::F64}, {"float32", DType::F32},
                                               {"float16", DType::F16}, {"bfloat16", DType::BF16},
                                               {"int64", DType::I64},   {"int32", DType::I32},
                                               {"int16", DType::I16},   {"int8", DType::I8},
                                               {"uint8", DType::U8},    {"bool", DType::Bool}};
  for (const auto& info : f.tensors())
    EXPECT_EQ(info.dtype, dtypes.at(t[info.name]["dtype"].get<std::string>())) << info.name;
}

}  // namespace
}  // namespace ssmkit
