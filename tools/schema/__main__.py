import sys

from tools.schema.document import main

sys.exit(main())
