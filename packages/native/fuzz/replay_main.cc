// Replays inputs through a harness without libFuzzer (the "normal build": no sanitizers, -O2,
// the project's usual compiler): each argument is a file or a directory of files. Exits 0
// once every input ran; a harness check or a crash ends the process as it would in libFuzzer.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static bool runFile(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) { perror(path.c_str()); return false; }
  std::vector<uint8_t> buf;
  uint8_t chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf.insert(buf.end(), chunk, chunk + n);
  fclose(f);
  fprintf(stderr, "replay %s (%zu bytes)\n", path.c_str(), buf.size());
  // A copy of exactly the input's size, as libFuzzer passes it (an over-read is then visible).
  uint8_t* copy = new uint8_t[buf.size() ? buf.size() : 1];
  std::copy(buf.begin(), buf.end(), copy);
  LLVMFuzzerTestOneInput(copy, buf.size());
  delete[] copy;
  return true;
}

int main(int argc, char** argv) {
  int count = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) { perror(argv[i]); return 2; }
    if (!S_ISDIR(st.st_mode)) {
      if (!runFile(argv[i])) return 2;
      count++;
      continue;
    }
    DIR* d = opendir(argv[i]);
    if (!d) { perror(argv[i]); return 2; }
    std::vector<std::string> names;
    while (struct dirent* e = readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
    for (const std::string& name : names) {
      if (!runFile(std::string(argv[i]) + "/" + name)) return 2;
      count++;
    }
  }
  printf("replayed %d inputs\n", count);
  return 0;
}
