// Placeholder until this concept lands; registers nothing.
#include <napi.h>
void InitDriver(Napi::Env, Napi::Object) {}
