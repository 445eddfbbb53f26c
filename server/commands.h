/*
 * The command layer: parses each vfio-user request from the client, calls
 * the region table or the device with typed arguments, and replies.
 */
#ifndef SERVER_COMMANDS_H
#define SERVER_COMMANDS_H

#include "transport.h"

/* Serve one client request (and send its reply); fits conn_serve_fn. */
void dispatch(struct conn *c, struct vu_msg *m);

#endif
