# shoal-ssh: a cluster over ssh (deploy/ssh/, docs/deploy/ssh.md).
SSH_DEPLOY_SRC := $(wildcard deploy/ssh/*.c)
SSH_DEPLOY_OBJ := $(patsubst %.c,build/%.o,$(SSH_DEPLOY_SRC))

DEPLOY_BINS += bin/shoal-ssh
# The ssh client for shoal-ssh; sshd and ip (network namespaces) for its test.
DEPLOY_PKGS += openssh-client openssh-server iproute2

bin/shoal-ssh: $(SSH_DEPLOY_OBJ) build/libshoal_common.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The end-to-end test runs bin/shoal-ssh, the programs it starts, and an example.
build/test/e2e/test_deploy_ssh: bin/shoal-ssh bin/shoal-scheduler bin/shoal-worker \
                                build/examples/primes
