# io/: logging, the reactor (io_uring + epoll backends), TLS over memory BIOs.
SRCS += $(wildcard io/*.c)
