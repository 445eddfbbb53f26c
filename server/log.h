/*
 * The server's log: standard error, or the file given with --log.  Every
 * layer writes to it; nothing else lives here.
 */
#ifndef SERVER_LOG_H
#define SERVER_LOG_H

#include <stdio.h>

extern FILE *log_file;

#endif
