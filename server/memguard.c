/* guarded_copy (memguard.h): memcpy with SIGBUS turned into EFAULT. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>

#include "memguard.h"

static sigjmp_buf copy_env;
static volatile sig_atomic_t copy_active;

static void on_sigbus(int sig)
{
    if (!copy_active) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    siglongjmp(copy_env, 1);
}

int guarded_copy(void *dst, const void *src, size_t len)
{
    static bool installed;

    if (!installed) {
        /* SA_NODEFER: SIGBUS stays unblocked in the handler, so jumping out
         * of it leaves the signal mask as it was and sigsetjmp need not
         * save the mask (that would cost a system call on every copy). */
        struct sigaction sa = { .sa_handler = on_sigbus, .sa_flags = SA_NODEFER };
        sigaction(SIGBUS, &sa, NULL);
        installed = true;
    }
    if (sigsetjmp(copy_env, 0)) {
        copy_active = 0;
        return EFAULT;
    }
    copy_active = 1;
    memcpy(dst, src, len);
    copy_active = 0;
    return 0;
}
