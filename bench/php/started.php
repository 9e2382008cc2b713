<?php
// bench/scale.py: when this request started running (wall clock), then a
// second of work, so every request of a burst needs its own process.
echo microtime(true);
usleep(1000000);
