from peftlab.report.cli import main

raise SystemExit(main())
