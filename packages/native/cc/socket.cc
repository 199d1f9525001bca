// Placeholder until this concept lands; registers nothing.
#include <napi.h>
void InitSocket(Napi::Env, Napi::Object) {}
