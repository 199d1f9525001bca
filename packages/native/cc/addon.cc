// One N-API module: each concept registers its own symbols (see native.ts for the contract).
#include <napi.h>

void InitSocket(Napi::Env env, Napi::Object exports);
void InitFdWatcher(Napi::Env env, Napi::Object exports);
void InitEngine(Napi::Env env, Napi::Object exports);
void InitSdNotify(Napi::Env env, Napi::Object exports);
void InitPremap(Napi::Env env, Napi::Object exports);
void InitExitProbe(Napi::Env env, Napi::Object exports);
void InitExitBeacon(Napi::Env env, Napi::Object exports);
void InitInbox(Napi::Env env, Napi::Object exports);
void InitReplyPipe(Napi::Env env, Napi::Object exports);

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitSocket(env, exports);
  InitFdWatcher(env, exports);
  InitEngine(env, exports);
  InitSdNotify(env, exports);
  InitPremap(env, exports);
  InitExitProbe(env, exports);
  InitExitBeacon(env, exports);
  InitInbox(env, exports);
  InitReplyPipe(env, exports);
  return exports;
}

NODE_API_MODULE(vhostd_native, Init)
