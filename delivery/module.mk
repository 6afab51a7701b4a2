# delivery/: the sending side: SMTP client (reply parser, client state
# machine), its connection pool.
SRCS += $(wildcard delivery/*.c)
# The client's tests drive this tree's server and the benchmark sink.
$(BUILD)/tests/unit/delivery/test_smtp_client: $(BUILD)/ortoo $(BUILD)/bench/ortoo-sink
