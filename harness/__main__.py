import sys

from trt_harness.harness.cli import main

sys.exit(main())
