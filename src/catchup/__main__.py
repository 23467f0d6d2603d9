from catchup.cli import main

main()
