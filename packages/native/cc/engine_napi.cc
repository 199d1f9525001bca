// Placeholder until this concept lands; registers nothing.
#include <napi.h>
void InitEngine(Napi::Env, Napi::Object) {}
