# shoal-jobqueue: Slurm / PBS job scripts, submission, scaling (deploy/jobqueue).
DEPLOY_BINS += bin/shoal-jobqueue
# The launcher needs only the batch system's client commands at run time; the
# tests start a real single-node Slurm (munge, slurmctld, slurmd) and submit
# #PBS scripts through Slurm's Torque wrapper (qsub/qstat/qdel).
DEPLOY_PKGS += slurmctld slurmd slurm-client munge slurm-wlm-torque

JOBQUEUE_OBJ := $(patsubst deploy/jobqueue/%.c,build/deploy/jobqueue/%.o,$(wildcard deploy/jobqueue/*.c))

build/deploy/jobqueue/%.o: deploy/jobqueue/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ideploy/jobqueue -MMD -MP -c $< -o $@

bin/shoal-jobqueue: $(JOBQUEUE_OBJ) lib/libshoal.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
