#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int M=atoi(argv[1]),N=atoi(argv[2]),K=atoi(argv[3]);
  float*A=malloc(sizeof(float)*M*K),*B=malloc(sizeof(float)*K*N),*C=malloc(sizeof(float)*M*N);
  for(int i=0;i<M*K;i++)A[i]=(i%7)*0.1f; for(int i=0;i<K*N;i++)B[i]=(i%5)*0.1f;
  int iters=2000; cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1,A,K,B,K,0,C,N);
  double t=now(); for(int i=0;i<iters;i++) cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,M,N,K,1,A,K,B,K,0,C,N);
  t=now()-t; printf("%dx%dx%d: %.1f GFLOP/s (%.1f us)\n",M,N,K,2.0*M*N*K*iters/t/1e9,t/iters*1e6);
}
