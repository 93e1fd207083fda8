from ringlb.cli import main

raise SystemExit(main())
