import sys

from vla_ros.cli import main

sys.exit(main())
