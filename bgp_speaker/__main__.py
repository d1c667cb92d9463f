from bgp_speaker.cli import main

raise SystemExit(main())
