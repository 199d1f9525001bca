// Placeholder until this concept lands; registers nothing.
#include <napi.h>
void InitFdWatcher(Napi::Env, Napi::Object) {}
