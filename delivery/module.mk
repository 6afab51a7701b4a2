# delivery/: the sending side: DSN building and bounces, local (Maildir)
# delivery, the SMTP client (reply parser, client state machine), the
# scheduler and routes.
SRCS += $(wildcard delivery/*.c)
# The client's tests drive this tree's server and the benchmark sink.
$(BUILD)/tests/unit/delivery/test_smtp_client: $(BUILD)/ortoo $(BUILD)/bench/ortoo-sink
