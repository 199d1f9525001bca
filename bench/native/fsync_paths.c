// The blk flush case's suspect, measured alone: 4 KiB pwrite + fdatasync cycles on a file,
// (1) in the calling thread, (2) handed to a worker thread as qemu-storage-daemon does
// (aio=threads), (3) through io_uring WRITEV + FSYNC(DATASYNC) as our engine does (the
// kernel runs the fsync on an io-wq worker). Prints microseconds per cycle, 3 rounds.
//   gcc -O2 -o /tmp/fsync_paths bench/native/fsync_paths.c -lpthread
//   dd if=/dev/urandom of=/tmp/f.raw bs=1M count=64 && /tmp/fsync_paths /tmp/f.raw
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int fd; static char buf[4096]; static int N=300;
static void cyc_sync(int i){ pwrite(fd,buf,4096,(off_t)i*4096); fdatasync(fd);}
// worker
static pthread_mutex_t m=PTHREAD_MUTEX_INITIALIZER; static pthread_cond_t c=PTHREAD_COND_INITIALIZER,d=PTHREAD_COND_INITIALIZER; static int job=-1,done=0;
static void* wk(void*a){for(;;){pthread_mutex_lock(&m);while(job<0)pthread_cond_wait(&c,&m);int j=job;job=-1;pthread_mutex_unlock(&m); if(j==1)pwrite(fd,buf,4096,0); else fdatasync(fd); pthread_mutex_lock(&m);done=1;pthread_cond_signal(&d);pthread_mutex_unlock(&m);}return 0;}
static void run(int j){pthread_mutex_lock(&m);job=j;done=0;pthread_cond_signal(&c);while(!done)pthread_cond_wait(&d,&m);pthread_mutex_unlock(&m);}
// io_uring
static int rfd; static unsigned *sqh,*sqt,*sqm,*sqa,*cqh,*cqt,*cqm; static struct io_uring_sqe*sqes; static struct io_uring_cqe*cqes;
static void ur_init(){struct io_uring_params p;memset(&p,0,sizeof p);rfd=syscall(__NR_io_uring_setup,8,&p);
 char*sq=mmap(0,p.sq_off.array+p.sq_entries*4+p.cq_off.cqes+p.cq_entries*16+4096,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_POPULATE,rfd,IORING_OFF_SQ_RING);
 char*cq=sq; sqh=(void*)(sq+p.sq_off.head);sqt=(void*)(sq+p.sq_off.tail);sqm=(void*)(sq+p.sq_off.ring_mask);sqa=(void*)(sq+p.sq_off.array);
 cqh=(void*)(cq+p.cq_off.head);cqt=(void*)(cq+p.cq_off.tail);cqm=(void*)(cq+p.cq_off.ring_mask);cqes=(void*)(cq+p.cq_off.cqes);
 sqes=mmap(0,p.sq_entries*sizeof(struct io_uring_sqe),PROT_READ|PROT_WRITE,MAP_SHARED|MAP_POPULATE,rfd,IORING_OFF_SQES);}
static struct iovec iov={buf,4096};
static void ur_one(int op,int i){unsigned t=*sqt;unsigned idx=t&*sqm;struct io_uring_sqe*e=&sqes[idx];memset(e,0,sizeof*e);e->fd=fd;
 if(op==1){e->opcode=IORING_OP_WRITEV;e->addr=(unsigned long)&iov;e->len=1;e->off=(off_t)i*4096;}else{e->opcode=IORING_OP_FSYNC;e->fsync_flags=IORING_FSYNC_DATASYNC;}
 sqa[idx]=idx;__atomic_store_n(sqt,t+1,__ATOMIC_RELEASE);syscall(__NR_io_uring_enter,rfd,1,1,IORING_ENTER_GETEVENTS,0,0);
 unsigned h=*cqh; if(cqes[h&*cqm].res<0)fprintf(stderr,"err %d\n",cqes[h&*cqm].res); __atomic_store_n(cqh,h+1,__ATOMIC_RELEASE);}
int main(int argc,char**argv){fd=open(argv[1],O_RDWR);memset(buf,'x',4096);pthread_t th;pthread_create(&th,0,wk,0);ur_init();
 for(int rep=0;rep<3;rep++){
 double t0=now();for(int i=0;i<N;i++)cyc_sync(i);double a=(now()-t0)/N;
 t0=now();for(int i=0;i<N;i++){run(1);run(2);}double b=(now()-t0)/N;
 t0=now();for(int i=0;i<N;i++){ur_one(1,i);ur_one(2,i);}double u=(now()-t0)/N;
 printf("per write+fdatasync us: same-thread %.0f  worker-thread %.0f  io_uring %.0f\n",a,b,u);}
}
