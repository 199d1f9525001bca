// The test addon (vhostd_native_test.node): helpers only tests use, kept out of the production
// addon. Loaded through @vhostd/native/testing (src/testing.ts declares its symbols).
#include <napi.h>

namespace vhd::testing {
void InitGuestFds(Napi::Env env, Napi::Object exports);
void InitNotifyListener(Napi::Env env, Napi::Object exports);
}  // namespace vhd::testing

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vhd::testing::InitGuestFds(env, exports);
  vhd::testing::InitNotifyListener(env, exports);
  return exports;
}

NODE_API_MODULE(vhostd_native_test, Init)
