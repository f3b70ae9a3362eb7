// Writes the golden streams of the payload codec: for every case of DIR/cases.json, DIR/<name>.hex
// with the messages the C++ encoders produce, one hex line each.
//
//   build/bin/payload_golden tests/proto/golden
//
// Run it only for an intended change of the wire (a new case, or a new cutting rule in
// proto/payload_codec.h); the Python client (client/python/dots_client/client.py) must then
// produce the same bytes, which tests/python/test_payload_golden.py checks.
#include <cstdio>
#include <fstream>
#include <string>

#include "tests/proto/golden_cases.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: payload_golden DIR (the directory of cases.json)\n");
    return 2;
  }
  const std::string dir = argv[1];
  absl::StatusOr<dots::testing::GoldenCases> cases = dots::testing::LoadGoldenCases(dir);
  if (!cases.ok()) {
    std::fprintf(stderr, "payload_golden: %s\n", cases.status().ToString().c_str());
    return 1;
  }
  auto write = [&](const std::string& name, const std::vector<std::string>& messages) {
    const std::string path = dir + "/" + name + ".hex";
    std::ofstream out(path, std::ios::trunc);
    out << dots::testing::ToHexLines(messages);
    out.close();
    if (!out) {
      std::fprintf(stderr, "payload_golden: %s: write failed\n", path.c_str());
      return false;
    }
    std::printf("%s: %zu messages\n", path.c_str(), messages.size());
    return true;
  };
  for (const dots::testing::ReportCase& c : cases->report) {
    if (!write(c.name, dots::testing::EncodeGolden(c))) return 1;
  }
  for (const dots::testing::BatchCase& c : cases->batch) {
    absl::StatusOr<std::vector<std::string>> messages = dots::testing::EncodeGolden(c);
    if (!messages.ok()) {
      std::fprintf(stderr, "payload_golden: %s: %s\n", c.name.c_str(),
                   messages.status().ToString().c_str());
      return 1;
    }
    if (!write(c.name, *messages)) return 1;
  }
  return 0;
}
