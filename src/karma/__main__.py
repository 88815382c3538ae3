from karma.cli import main

raise SystemExit(main())
