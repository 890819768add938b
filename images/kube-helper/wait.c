/* The placeholder of gantry's Kubernetes pods: holds a container until the runner swaps its
 * step's image in, and ends at once, with 0, when the kubelet stops it. Takes any arguments
 * and ignores them: it stands at the shell paths, where a step's `sh -c SCRIPT` finds it. */
#include <signal.h>
#include <unistd.h>

static void stop(int signal_number) {
  (void)signal_number;
  _exit(0);
}

int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  for (;;) {
    pause();
  }
}
