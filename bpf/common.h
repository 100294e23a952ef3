/* Definitions shared by all of tuner's BPF programs. */
#ifndef TUNER_COMMON_H
#define TUNER_COMMON_H

/* Version of the record layouts; the Python loaders check it at load time. */
#define TUNER_ABI_VERSION 1

#endif
