import os
import sys

# `import benchlib` from scripts/, as scripts/bench does.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
