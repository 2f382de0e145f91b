import os
import sys

# `import chaoslib` from scripts/, as scripts/chaos does.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
