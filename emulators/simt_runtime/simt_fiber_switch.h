// SIMT runtime: switching between the scheduler and a fiber.
// Included once by simt_runtime.cpp (needs its Fiber/Worker types): a small
// hand-written x86-64 switch (callee-saved registers only), ucontext elsewhere.
#pragma once

extern "C" __attribute__((visibility("hidden"))) void simt_fiber_main(Fiber* f);

#ifndef SIMT_USE_UCONTEXT
asm(R"(
  .text
  .p2align 4
  .type simt_ctx_switch,@function
simt_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_ctx_switch,.-simt_ctx_switch
  .p2align 4
  .type simt_ctx_entry,@function
simt_ctx_entry:
  movq %rbx, %rdi
  call simt_fiber_main
  ud2
  .size simt_ctx_entry,.-simt_ctx_entry
)");
extern "C" void simt_ctx_switch(void** save, void* to) __asm__("simt_ctx_switch");
extern "C" void simt_ctx_entry() __asm__("simt_ctx_entry");

static void fiber_prepare(Fiber* f) {
  uintptr_t top = (uintptr_t)f->stack_hi & ~(uintptr_t)15;
  void** sp = (void**)(top - 72);  // 6 saved registers + return address; keeps the ABI alignment
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  sp[4] = (void*)f;                 // rbx -> first argument of simt_fiber_main
  sp[6] = (void*)&simt_ctx_entry;
  f->sp = sp;
}
static inline void to_fiber(Worker* w, Fiber* f) { simt_ctx_switch(&w->sched_sp, f->sp); }
static inline void to_scheduler(Worker* w, Fiber* f) { simt_ctx_switch(&f->sp, w->sched_sp); }
#else
static void uc_entry(unsigned hi, unsigned lo) {
  simt_fiber_main((Fiber*)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
static void fiber_prepare(Fiber* f) {
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = f->stack_lo;
  f->uc.uc_stack.ss_size = (size_t)(f->stack_hi - f->stack_lo);
  f->uc.uc_link = nullptr;
  uintptr_t p = (uintptr_t)f;
  makecontext(&f->uc, (void (*)())uc_entry, 2, (unsigned)(p >> 32), (unsigned)(p & 0xFFFFFFFFu));
}
static inline void to_fiber(Worker* w, Fiber* f) { swapcontext(&w->sched_uc, &f->uc); }
static inline void to_scheduler(Worker* w, Fiber* f) { swapcontext(&f->uc, &w->sched_uc); }
#endif
