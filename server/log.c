/* The server's log stream (see log.h); main() points it at --log. */
#include "log.h"

FILE *log_file;
