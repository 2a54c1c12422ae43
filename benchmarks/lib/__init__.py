"""Research-only code the benchmarks and their tests share, kept out of the installed
package: HELP-style transfer latency predictors (:mod:`.external`) and the NAS-Bench-201
table and search space (:mod:`.nb201`)."""
