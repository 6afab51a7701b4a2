# delivery/: the sending side: the SMTP client (reply parser, body cursor,
# client state machine), the scheduler (with its idle connections per
# destination) and routes,
# DSN building, bounces and notices, local (Maildir) delivery.
SRCS += $(wildcard delivery/*.c)
# The client's tests drive this tree's server and the benchmark sink.
$(BUILD)/tests/unit/delivery/test_smtp_client: $(BUILD)/ortoo $(BUILD)/bench/ortoo-sink
