// FdWatcher: calls a JS function on the JS thread whenever an fd becomes readable
// (or errors / hangs up, so the JS side gets to read the EOF), and optionally another
// when it becomes writable: setEvents() chooses which interest is on (a socket with a
// queued send watches for writable; one whose peer does not read its replies stops
// reading). One uv_poll_t per fd on Node's own loop (libuv allows no second one on the
// same fd, hence both interests here); no threads. The watcher never owns the fd: stop()
// it before closing the fd, as libuv requires.
//
// Lifetimes:
//  - The uv_poll_t lives in a heap Poll that libuv owns from uv_poll_init() until the
//    uv_close() callback frees it; the JS object may be collected long before that.
//  - While polling, the JS object is pinned (strong self-reference), as Node pins its
//    own active handles: a watcher nobody references must keep firing, not vanish at
//    the next GC. stop() unpins it.
//  - An async cleanup hook closes a still-running poll when the environment is torn
//    down (worker exit), otherwise Node would find an open handle on a dying loop.
#include <napi.h>
#include <uv.h>

#include <climits>
#include <cmath>
#include <memory>

#include "napi_util.h"

namespace {

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {InstanceMethod<&FdWatcher::Stop>("stop"),
                        InstanceMethod<&FdWatcher::SetEvents>("setEvents"),
                        InstanceMethod<&FdWatcher::Ref>("ref"),
                        InstanceMethod<&FdWatcher::Unref>("unref")});
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    double fd = vhd::napi::IntArgAtLeast(info, 0, "FdWatcher: fd", 0, INT_MAX);
    if (info.Length() < 2 || !info[1].IsFunction())
      throw Napi::TypeError::New(env, "FdWatcher: onReadable must be a function");
    bool hasWritable = info.Length() > 2 && !info[2].IsUndefined();
    if (hasWritable && !info[2].IsFunction())
      throw Napi::TypeError::New(env, "FdWatcher: onWritable must be a function");

    // Everything that can throw on the JS side comes first: once uv_poll_init()
    // succeeds, the handle can only be released through uv_close().
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    if (hasWritable) writableCallback_ = Napi::Persistent(info[2].As<Napi::Function>());
    async_ = std::make_unique<Napi::AsyncContext>(env, "vhostd.FdWatcher");

    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env);

    auto poll = std::make_unique<Poll>();
    int r = uv_poll_init(loop, &poll->uv, static_cast<int>(fd));
    if (r < 0) ThrowUv(env, r, "uv_poll_init");  // not initialized: unique_ptr frees it
    poll->uv.data = poll.get();
    poll->owner = this;
    poll_ = poll.release();

    r = uv_poll_start(&poll_->uv, events_, OnPoll);
    if (r >= 0 && napi_add_async_cleanup_hook(env, OnEnvTeardown, poll_, &poll_->hook) != napi_ok)
      r = UV_ENOMEM;
    if (r < 0) {
      Close();
      ThrowUv(env, r, "uv_poll_start");
    }
    ObjectWrap::Ref();  // pinned while polling
    pinned_ = true;
  }

  ~FdWatcher() override { Close(); }  // only reached after stop() or at env teardown

 private:
  struct Poll {
    uv_poll_t uv;
    FdWatcher* owner = nullptr;  // null once closing: the watcher may be gone by then
    napi_async_cleanup_hook_handle hook = nullptr;
  };

  /** err: a libuv error (a negated errno). */
  [[noreturn]] static void ThrowUv(Napi::Env env, int err, const char* syscall) {
    vhd::napi::ThrowSystemError(env, "FdWatcher: ", -err, syscall);
  }

  // Runs on the JS thread from the libuv loop, i.e. outside any JS call: it needs its
  // own handle scope, and MakeCallback gives async_hooks context plus microtask and
  // nextTick processing. Nothing may throw out of here into libuv.
  // Writable first (a flush may be what the readable side waits for), then readable.
  static void OnPoll(uv_poll_t* handle, int status, int events) {
    Poll* poll = static_cast<Poll*>(handle->data);
    if (poll->owner == nullptr) return;
    // An error (status < 0) goes to whichever side is watching: its next syscall reports it.
    bool writable = status < 0 || (events & UV_WRITABLE) != 0;
    bool readable = status < 0 || (events & (UV_READABLE | UV_DISCONNECT)) != 0;
    if (writable && (poll->owner->events_ & UV_WRITABLE) != 0) Call(poll->owner, poll->owner->writableCallback_);
    // The first callback may have stopped the watcher: `poll` lives until OnClosed (a later
    // loop turn), and a stopped watcher's owner is null.
    if (readable && poll->owner != nullptr && (poll->owner->events_ & UV_READABLE) != 0)
      Call(poll->owner, poll->owner->callback_);
  }

  static void Call(FdWatcher* self, Napi::FunctionReference& fn) {
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    try {
      // `self` may be stopped and collected once the callback returns: not touched after.
      fn.MakeCallback(self->Value(), std::initializer_list<napi_value>{}, *self->async_);
    } catch (const Napi::Error& e) {
      // A throwing callback is the JS program's bug: report it the way Node reports any
      // exception from an event callback ('uncaughtException', else exit), not abort().
      napi_fatal_exception(env, e.Value());
    } catch (...) {
    }
  }

  static void OnClosed(uv_handle_t* handle) {
    Poll* poll = static_cast<Poll*>(handle->data);
    if (poll->hook != nullptr) napi_remove_async_cleanup_hook(poll->hook);  // also signals "done"
    delete poll;
  }

  // Env teardown: close the handle without touching JS (it can no longer run).
  // A poll that is already closing just waits for OnClosed to remove the hook.
  static void OnEnvTeardown(napi_async_cleanup_hook_handle, void* arg) {
    Poll* poll = static_cast<Poll*>(arg);
    if (poll->owner != nullptr) poll->owner->Close();
  }

  // The libuv half of stopping; safe from destructors and cleanup hooks.
  void Close() {
    if (poll_ == nullptr) return;
    poll_->owner = nullptr;
    uv_poll_stop(&poll_->uv);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_->uv), OnClosed);
    poll_ = nullptr;
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    Close();
    if (pinned_) {
      pinned_ = false;
      ObjectWrap::Unref();
    }
    return info.Env().Undefined();
  }

  // setEvents(readable, writable): which interests are on (both off: the watcher sleeps,
  // but stays usable). Writable needs the onWritable callback.
  Napi::Value SetEvents(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsBoolean() || !info[1].IsBoolean())
      throw Napi::TypeError::New(env, "FdWatcher.setEvents: readable and writable must be booleans");
    bool writable = info[1].As<Napi::Boolean>().Value();
    if (writable && writableCallback_.IsEmpty())
      throw Napi::TypeError::New(env, "FdWatcher.setEvents: no onWritable callback was given");
    int events = (info[0].As<Napi::Boolean>().Value() ? UV_READABLE | UV_DISCONNECT : 0) |
                 (writable ? UV_WRITABLE : 0);
    if (poll_ == nullptr || events == events_) return env.Undefined();
    // On an active handle uv_poll_start() only changes the mask; 0 stops polling.
    int r = uv_poll_start(&poll_->uv, events, OnPoll);
    if (r < 0) ThrowUv(env, r, "uv_poll_start");
    events_ = events;
    return env.Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&poll_->uv));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&poll_->uv));
    return info.Env().Undefined();
  }

  Poll* poll_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::FunctionReference writableCallback_;
  int events_ = UV_READABLE | UV_DISCONNECT;
  std::unique_ptr<Napi::AsyncContext> async_;
  bool pinned_ = false;
};

}  // namespace

void InitFdWatcher(Napi::Env env, Napi::Object exports) {
  exports.Set("FdWatcher", FdWatcher::Define(env));
}
